"""Whole-dataset checks (`recfound data validate`) and conversion of the authors' released files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from recfound import storage
from recfound.data.atomic import atomic_write_lines
from recfound.data.reader import SPLITS, Policy, RecordError, SkipReport, iter_records, raw_rows, task_files
from recfound.data.released import ReleasedRowError, convert_row, resolve_task_name
from recfound.data.records import check_record, normalize
from recfound.progress import format_table
from recfound.tasks import all_tasks


@dataclass
class DatasetSummary:
    """Valid record counts per split and task, what was skipped, and which task files are missing."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    report: SkipReport = field(default_factory=SkipReport)
    missing: dict[str, list[str]] = field(default_factory=dict)

    def table(self) -> str:
        """A plain-text table: one row per task, one column per split (plus skipped)."""
        splits = list(self.counts)
        rows = [[t.name, t.kind.value, *[_cell(self.counts[s].get(t.name)) for s in splits],
                 self.report.skipped[t.name]] for t in all_tasks()]
        rows.append(["total", "", *[sum(self.counts[s].values()) for s in splits], self.report.total])
        return format_table(["task", "kind", *splits, "skipped"], rows)


def _cell(count: int | None) -> str:
    return "missing" if count is None else str(count)


def validate_dataset(root: storage.Location, splits: tuple[str, ...] = SPLITS,
                     policy: Policy = "strict") -> DatasetSummary:
    """Check every task file of every split (`root` a local folder or a URI); strict stops at the first bad
    record. A task file without a single valid record is an error (training refuses it): remove the file to
    leave the task out."""
    summary = DatasetSummary()
    for split in splits:
        files = task_files(root, split)
        summary.counts[split] = {name: sum(1 for _ in iter_records(path, name, policy, summary.report))
                                 for name, path in files.items()}
        summary.missing[split] = [t.name for t in all_tasks() if t.name not in files]
        for name, count in summary.counts[split].items():
            if count == 0:
                raise RecordError(files[name], None, "<file>", "no valid records; a task file needs at least one "
                                  "(remove the file to leave the task out)")
    return summary


def convert_released(inputs: list[storage.Location], out: Path | str, split: str, policy: Policy = "strict",
                     report: SkipReport | None = None) -> dict[str, int]:
    """Convert the authors' JSONL/Parquet files (rows of any task) into `<out>/<split>/<TASK>.jsonl`.

    All input is read and checked before anything is written, so a strict failure writes nothing.
    Skipped rows are counted per task (`<unknown>` when the row names no known task).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    by_task: dict[str, list[str]] = {}
    for path in inputs:
        for where, row in raw_rows(path):
            try:
                for record in _converted(path, where, row):
                    by_task.setdefault(record["task"], []).append(json.dumps(record, ensure_ascii=False))
            except RecordError as error:
                if policy == "strict":
                    raise
                if report is not None:
                    report.add(_task_name(row), error)
    for name, lines in by_task.items():
        atomic_write_lines(Path(out) / split / f"{name}.jsonl", lines)
    return {name: len(lines) for name, lines in by_task.items()}


def _converted(path: storage.Location, where: int | str, row: object) -> list[dict]:
    """Our normalized records for one released row, or the RecordError that says what is wrong."""
    if isinstance(row, RecordError):
        raise row
    if not isinstance(row, dict):
        raise RecordError(path, where, "<record>", f"expected a JSON object, got {type(row).__name__}")
    try:
        task = resolve_task_name(row.get("task"))
        records = convert_row(row, task)
    except ReleasedRowError as err:
        raise RecordError(path, where, err.field, str(err)) from None
    for record in records:
        problem = check_record(record, task)
        if problem:
            raise RecordError(path, where, problem.field, problem.message)
    return [normalize(record, task) for record in records]


def _task_name(row: object) -> str:
    try:
        return resolve_task_name(row.get("task")).name if isinstance(row, dict) else "<unknown>"
    except ReleasedRowError:
        return "<unknown>"
