"""`recfound demo --source movielens DIR` (or `--source amazon REVIEWS --meta META`): the demo on your own
interaction logs.

The tasks are built from the logs (`recfound data build` with its default settings and the run's seed) into
`<run.output_dir>/<run.name>-data`; the demo then trains on the tasks that folder can feed (train records,
a validation record per worker, records in the evaluated split), scores retrieval on the full pool
(`eval.protocol: full`: a small build's pools are often too small for 19 sampled negatives), and its
summary ends with the full-catalog table of the model beside the popularity and item-kNN baselines.
Every `--set` override still applies, after these settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from recfound import storage
from recfound.config import RunConfig, load_config

DATA_SUFFIX = "-data"  # the built folder: <run.output_dir>/<run.name>-data


def trainable_tasks(records: Mapping[str, Mapping[str, int]], workers: int, eval_split: str | None
                    ) -> tuple[list[str], dict[str, str]]:
    """(the tasks a run can train and evaluate, in build order; {task left out: why}) from a build's record
    counts per split and task (build.json's `records`)."""
    tasks, left_out = [], {}
    for task in dict.fromkeys(name for split in records.values() for name in split):
        val = records.get("val", {}).get(task, 0)
        if not records.get("train", {}).get(task, 0):
            left_out[task] = "no train records"
        elif not val:
            left_out[task] = "no val records"
        elif val < workers:
            left_out[task] = f"{val} val record{'' if val == 1 else 's'} for {workers} workers"
        elif eval_split is not None and not records.get(eval_split, {}).get(task, 0):
            left_out[task] = f"no {eval_split} records"
        else:
            tasks.append(task)
    return tasks, left_out


def tasks_line(tasks: Sequence[str], left_out: Mapping[str, str]) -> str:
    """The one line saying what the demo trains on, and what it leaves out and why."""
    line = f"training on the {len(tasks)} built tasks with records to train, validate and evaluate: {', '.join(tasks)}"
    if left_out:
        line += "; left out: " + ", ".join(f"{task} ({why})" for task, why in left_out.items())
    return line


def logs_demo_config(source: str, path: Path, meta: Path | None, overrides: Sequence[str]) -> RunConfig:
    """Build the tasks of the logs at `path` (see module doc) and return the demo's config for them."""
    from recfound.data.logs.build import build_logs
    from recfound.data.logs.settings import Settings

    # The run's folder, seed, workers and evaluated split; the data.* overrides wait for the built root,
    # whose tasks.yaml declares the tasks they may name.
    settings = load_config(None, [item for item in overrides if not item.strip().startswith("data.")],
                           check_paths=False)
    if storage.is_remote(settings.run.output_dir):
        raise ValueError(f"run.output_dir {settings.run.output_dir}: recfound demo --source builds its data on this "
                         "machine; set run.output_dir to a local folder")
    folder = Path(settings.run.output_dir) / f"{settings.run.name}{DATA_SUFFIX}"
    print(f"== building the tasks from {path} into {folder}", flush=True)
    report = build_logs(source, path, folder, Settings(seed=settings.run.seed), meta)
    print(report.summary(), flush=True)
    evaluated = settings.eval.split if settings.eval.enabled else None
    tasks, left_out = trainable_tasks(report.records, settings.train.max_workers, evaluated)
    print(tasks_line(tasks, left_out), flush=True)
    return load_config(None, [f"data.root={json.dumps(str(folder))}", "data.synth_scale=null",
                              f"data.tasks={json.dumps(tasks)}", "eval.protocol=full", *overrides])
