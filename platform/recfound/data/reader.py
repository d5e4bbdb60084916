"""Reading one task's records from JSON lines or Parquet, with errors that name file, line and field.

A file is a location (`recfound.storage`): a local path or an object-store URI
(`s3://bucket/corpus/train/SA.jsonl`). Two policies: `strict` raises `RecordError` at the first bad
record; `skip` drops bad records and counts them per task in a `SkipReport` (with the first few
reasons). Rows in the authors' released format are converted on the fly (see `recfound.data.released`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator, Literal

from recfound import storage
from recfound.data.records import Problem, check_record, normalize
from recfound.data.released import ReleasedRowError, convert_row, is_released_row
from recfound.task_file import load_root_tasks
from recfound.tasks import Task, get_task, task_names

Policy = Literal["strict", "skip"]
POLICIES = ("strict", "skip")
SUFFIXES = (".jsonl", ".parquet")
SPLITS = ("train", "val", "test")


class RecordError(ValueError):
    """A bad record (or file): `where` is 'file:line' (Parquet: 'file:row N'), `field` the field."""

    def __init__(self, path: storage.Location, line: int | str | None, field: str, message: str) -> None:
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {field}: {message}")

    def __reduce__(self) -> tuple:  # pickled by its parts: a Ray read task raises it in another process
        return type(self), (self.path, self.line, self.field, self.reason)


@dataclass
class SkipReport:
    """What the `skip` policy dropped: a count per task and the first few reasons."""

    max_reasons: int = 5
    skipped: Counter = field(default_factory=Counter)
    reasons: list[str] = field(default_factory=list)

    def add(self, task: str, error: RecordError) -> None:
        self.skipped[task] += 1
        if len(self.reasons) < self.max_reasons:
            self.reasons.append(str(error))

    def merge(self, other: SkipReport) -> None:
        """Add what another report counted (e.g. one task's, counted where its file was read)."""
        self.skipped.update(other.skipped)
        self.reasons.extend(other.reasons[: max(0, self.max_reasons - len(self.reasons))])

    @property
    def total(self) -> int:
        return sum(self.skipped.values())


def _handle(error: RecordError, task: Task, policy: Policy, report: SkipReport | None) -> None:
    if policy == "strict":
        raise error
    if report is not None:
        report.add(task.name, error)


Where = int | str  # a JSONL line number, or "row N" in a Parquet file
MAX_RECORD_BYTES = 1 << 20  # one instruction record; a long review is a few KB


def _json_lines(path: storage.Location) -> Iterator[tuple[Where, Any | RecordError]]:
    """(line number, parsed object or the error for that line) for every non-blank line."""
    data = storage.read_bytes(path)
    lines = data.split(b"\n")
    complete = data.endswith(b"\n")
    if complete:
        lines.pop()  # the empty piece after the final newline
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            yield number, RecordError(path, number, "<line>", f"invalid UTF-8 at byte {err.start}")
            continue
        if len(raw) > MAX_RECORD_BYTES:
            yield number, RecordError(path, number, "<line>", f"a record of {len(raw):,} bytes; the limit is "
                                      f"{MAX_RECORD_BYTES:,} (cut its text, or split it into several records)")
            continue
        try:
            yield number, json.loads(text)
        except RecursionError:
            yield number, RecordError(path, number, "<line>", "JSON nested too deeply")
        except json.JSONDecodeError as err:
            is_last = number == len(lines)
            reason = "truncated last line (no newline, incomplete JSON)" if is_last and not complete \
                else f"invalid JSON: {err.msg} (column {err.colno})"
            yield number, RecordError(path, number, "<line>", reason)


def _parquet_rows(path: storage.Location) -> Iterator[tuple[Where, Any | RecordError]]:
    import pyarrow.parquet as pq

    filesystem, inner = storage.resolve(path)
    try:
        table = pq.read_table(inner, filesystem=filesystem)
    except Exception as err:  # pyarrow raises several types for a damaged file
        yield 0, RecordError(path, None, "<file>", f"unreadable Parquet file: {err}")
        return
    for number, row in enumerate(table.to_pylist(), start=1):
        size = _text_bytes(row)
        if size > MAX_RECORD_BYTES:
            yield f"row {number}", RecordError(path, f"row {number}", "<row>", f"a record of {size:,} bytes of text; the "
                                               f"limit is {MAX_RECORD_BYTES:,} (cut its text, or split it into "
                                               "several records)")
            continue
        yield f"row {number}", {k: v for k, v in row.items() if v is not None}


def _text_bytes(row: dict) -> int:
    """The UTF-8 bytes of every string (and bytes value) in a Parquet row, however nested (no recursion)."""
    total, todo = 0, [row]
    while todo:
        value = todo.pop()
        if isinstance(value, str):
            total += len(value.encode("utf-8"))
        elif isinstance(value, bytes):
            total += len(value)
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return total


def _suffix(location: storage.Location) -> str:
    return PurePosixPath(storage.basename(location)).suffix


def raw_rows(path: storage.Location) -> Iterator[tuple[Where, Any | RecordError]]:
    """(where, parsed row or the error for it) for every row of a JSONL or Parquet file."""
    if not storage.is_file(path):
        raise FileNotFoundError(f"{path}: no such record file")
    return _parquet_rows(path) if _suffix(path) == ".parquet" else _json_lines(path)


def iter_records(path: storage.Location, task: Task | str, policy: Policy = "strict",
                 report: SkipReport | None = None) -> Iterator[dict]:
    """Valid, normalized records of one task file (JSONL or Parquet) under the given policy."""
    task = get_task(task) if isinstance(task, str) else task
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    for where, obj in raw_rows(path):
        if isinstance(obj, RecordError):
            _handle(obj, task, policy, report)
            continue
        try:
            candidates = convert_row(obj, task) if is_released_row(obj) else [obj]
        except ReleasedRowError as err:
            _handle(RecordError(path, where, err.field, str(err)), task, policy, report)
            continue
        for candidate in candidates:
            problem: Problem | None = check_record(candidate, task)
            if problem is None:
                yield normalize(candidate, task)
            else:
                _handle(RecordError(path, where, problem.field, problem.message), task, policy, report)


def read_records(path: storage.Location, task: Task | str, policy: Policy = "strict",
                 report: SkipReport | None = None) -> list[dict]:
    """All valid records of one task file, as a list (see `iter_records`)."""
    return list(iter_records(path, task, policy, report))


def task_files(root: storage.Location, split: str) -> dict[str, str]:
    """{task name: file location} for `<root>/<split>/<TASK>.jsonl|.parquet` (`root` a local folder or a URI);
    unknown task files are an error. The tasks of `<root>/tasks.yaml` are registered first."""
    load_root_tasks(root)
    folder = storage.join(root, split)
    if not storage.is_dir(folder):
        raise FileNotFoundError(f"{folder}: no such split folder (expected <root>/{split}/<TASK>.jsonl)")
    files: dict[str, str] = {}
    for name in storage.list_names(folder):
        stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
        if suffix not in SUFFIXES:
            continue
        path = storage.join(folder, name)
        try:
            get_task(stem)
        except KeyError as err:
            raise RecordError(path, None, "<file>", f"file name does not name a task: {err.args[0]}") from None
        if stem in files:
            raise RecordError(path, None, "<file>", f"two files for task {stem}: {storage.basename(files[stem])}")
        files[stem] = path
    return files


def selected_task_files(root: storage.Location, split: str, tasks: list[str] | None = None) -> dict[str, str]:
    """{task: file location} of `tasks` (default: every task file present, in registry order) in
    `<root>/<split>/`; a FileNotFoundError names the selected tasks that have no file."""
    files = task_files(root, split)
    for name in tasks or ():
        get_task(name)  # an unknown name (e.g. lower-case) is a KeyError naming the known tasks
    names = tasks or [name for name in task_names() if name in files]
    missing = [name for name in names if name not in files]
    if missing:
        raise FileNotFoundError(f"{storage.join(root, split)}: no record file for task(s) {', '.join(missing)}")
    return {name: files[name] for name in names}
