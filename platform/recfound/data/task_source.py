"""One task file as a Ray Data source: its read task reads, validates and blocks the file in a Ray
worker, from a local path or an object-store URI (the worker opens the store itself, through
`recfound.storage`, with the credentials of its own environment)."""

from __future__ import annotations

import sys
from functools import partial
from typing import Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from recfound.data.blocks import problem_rows, records_table, with_problems
from recfound.data.reader import Policy, SkipReport, iter_records
from recfound.tasks import Task

BLOCK_ROWS = 2048  # records per block a read task yields (Ray Data then cuts its output into 1 MiB blocks)


def read_task_file(location: str, task: Task, policy: Policy, block_rows: int = BLOCK_ROWS) -> Iterator[pa.Table]:
    """Blocks of at most `block_rows` of the file's valid records, in file order, each followed by the
    problem rows (`skip`) of the records dropped since the previous block; under `strict` the first bad
    record raises its RecordError. At least one block, so an empty file still has a schema."""
    problems = SkipReport(max_reasons=sys.maxsize)  # every reason: each becomes a row of the next block
    records: list[dict] = []
    position = 0
    for record in iter_records(location, task, policy, problems):
        records.append(record)
        if len(records) == block_rows:
            yield _block(records, task, position, problems)
            position += len(records)
            records = []
    yield _block(records, task, position, problems)


def _block(records: list[dict], task: Task, position: int, problems: SkipReport) -> pa.Table:
    """The block of `records` and of the reasons `problems` holds (which it then forgets)."""
    reasons, problems.reasons = problems.reasons, []
    first_problem = problems.total - len(reasons)
    return with_problems(records_table(records, task, position), problem_rows(task.name, reasons, first_problem))


class TaskFileSource(Datasource):
    """`<root>/<split>/<TASK>.jsonl|.parquet` read by a single read task (`read_task_file`)."""

    def __init__(self, location: str, task: Task, policy: Policy) -> None:
        super().__init__()
        self.location, self.task, self.policy = location, task, policy

    def get_name(self) -> str:
        return f"Read{self.task.name}"

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: object = None) -> list[ReadTask]:
        metadata = BlockMetadata(num_rows=None, size_bytes=None, input_files=[self.location], exec_stats=None)
        return [ReadTask(partial(read_task_file, self.location, self.task, self.policy), metadata)]
