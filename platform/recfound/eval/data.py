"""What an evaluation scores: each task's records of one split, and each embedding task's candidate pool.

The candidate pool of an embedding task is every distinct document (positives and given negatives) of
its records in the split: full-pool retrieval ranks each query's positive against all of it. The
authors' protocol instead ranks the positive against `negatives` documents sampled per query from the
pool, preferring the positive's own category (read from an item text's category path, `Title |
Top > Sub > Leaf`); a pool without enough same-category documents is filled from the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from recfound.data.reader import read_records, selected_task_files
from recfound.tasks import Kind, get_task

CATEGORY_SEPARATOR = " > "


def load_split(root: Path | str, split: str, tasks: list[str] | None = None,
               max_records: int | None = None) -> dict[str, list[dict]]:
    """{task: normalized records} of `<root>/<split>/` (`root` a local folder or a URI; strictly validated),
    the first `max_records` of each file when given; `tasks` defaults to every task file present, in
    registry order."""
    data = {}
    for name, path in selected_task_files(root, split, tasks).items():
        records = read_records(path, name)
        if not records:
            raise ValueError(f"{path}: no records to evaluate task {name} on")
        data[name] = records[:max_records] if max_records else records
    return data


def category_of(text: str) -> str | None:
    """The top-level category of an item text holding a category path ('... | Home > Kitchen > Pans'),
    else None."""
    for part in text.split(" | "):
        if CATEGORY_SEPARATOR in part:
            return part.split(CATEGORY_SEPARATOR, 1)[0].strip()
    return None


@dataclass(frozen=True)
class CandidatePool:
    """One embedding task's distinct documents; per record the index of its positive and of the document
    equal to its query, if any (an I2I item is never its own neighbour: that document is left out)."""

    task: str
    documents: tuple[str, ...]
    positives: tuple[int, ...]
    own: tuple[int | None, ...] = ()

    @classmethod
    def of(cls, task: str, records: list[dict]) -> CandidatePool:
        """The pool of `records` (normalized embedding records of `task`)."""
        if get_task(task).kind is not Kind.EMBEDDING:
            raise ValueError(f"task {task} is not an embedding task: it has no candidate pool")
        index: dict[str, int] = {}
        for record in records:
            for text in (record["positive"], *record["negatives"]):
                index.setdefault(text, len(index))
        own = tuple(index.get(r["query"]) if index.get(r["query"]) != index[r["positive"]] else None
                    for r in records)
        return cls(task, tuple(index), tuple(index[r["positive"]] for r in records), own)

    def sampled_candidates(self, negatives: int, seed: int) -> tuple[list[list[int]], float]:
        """(per record [its positive, then `negatives` other documents, of the positive's category when
        there are enough], the share of all sampled negatives that are of that category). Seeded."""
        left_out = 2 if any(own is not None for own in self.own or ()) else 1  # the positive (and the query's item)
        if len(self.documents) - left_out < negatives:
            raise ValueError(f"task {self.task}: the pool holds {len(self.documents)} documents, too few for "
                             f"{negatives} sampled negatives per query (lower eval.sampled_negatives, "
                             "`--negatives` of recfound eval run)")
        by_category: dict[str | None, list[int]] = {}
        for i, text in enumerate(self.documents):
            by_category.setdefault(category_of(text), []).append(i)
        rng = random.Random(f"recfound-eval/{seed}/{self.task}")
        rows, same_category = [], 0
        for positive, own in zip(self.positives, self.own or (None,) * len(self.positives)):
            category = category_of(self.documents[positive])
            excluded = {positive, own}
            same = [i for i in by_category.get(category, []) if i not in excluded] if category is not None else []
            chosen = rng.sample(same, min(negatives, len(same)))
            same_category += len(chosen)
            if len(chosen) < negatives:
                taken = set(chosen) | excluded
                rest = [i for i in range(len(self.documents)) if i not in taken]
                chosen += rng.sample(rest, negatives - len(chosen))
            rows.append([positive, *chosen])
        return rows, same_category / max(1, negatives * len(rows))
