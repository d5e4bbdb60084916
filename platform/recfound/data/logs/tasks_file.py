"""The auxiliary tasks built from logs (beyond the 13 built-ins), declared in `<root>/tasks.yaml` in the
task-file format of `recfound.task_file`, so they are known wherever the data root is read."""

from __future__ import annotations

from pathlib import Path

import yaml

from recfound.data.atomic import atomic_write_bytes
from recfound.data.logs.wordings import WORDINGS
from recfound.task_file import ROOT_TASK_FILE, VERSION, task_entry
from recfound.tasks import AnswerType, Kind, Task

RATING_LABELS = ("1", "2", "3", "4", "5")
AGE_BANDS = ("under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56 or older")
AGE_LIMITS = (18, 25, 35, 45, 50, 56)  # the lowest age of each band after the first

AUX_TASKS: dict[str, Task] = {task.name: task for task in (
    Task("MIM", Kind.GENERATIVE, "masked item modelling: a history with one item hidden -> that item",
         "recall@1", AnswerType.OPTION_LETTER, WORDINGS["MIM"]),
    Task("PREF", Kind.GENERATIVE, "pairwise preference: which of two items the user engaged with next",
         "recall@1", AnswerType.OPTION_LETTER, WORDINGS["PREF"]),
    Task("WI", Kind.GENERATIVE, "will the user interact with this item next (yes or no)", "f1_yes",
         AnswerType.YES_NO, WORDINGS["WI"]),
    Task("RP", Kind.GENERATIVE, "rating prediction: a rated history -> the rating of the next item", "accuracy",
         AnswerType.LABEL_SET, WORDINGS["RP"], labels=RATING_LABELS),
    Task("UAP", Kind.GENERATIVE, "user attribute prediction: a rated history -> the user's age group", "accuracy",
         AnswerType.LABEL_SET, WORDINGS["UAP"], labels=AGE_BANDS),
)}


def write_tasks_file(root: Path, names: list[str]) -> None:
    """Declare the named auxiliary tasks in `<root>/tasks.yaml`."""
    document = {"version": VERSION, "tasks": [task_entry(AUX_TASKS[name]) for name in names]}
    atomic_write_bytes(Path(root) / ROOT_TASK_FILE,
                       yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120).encode())
