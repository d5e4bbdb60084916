"""Arrow blocks of one task's records as Ray Data carries them from the read tasks to the pools.

A block holds normalized records with their `position` (the record's place among the file's valid
records) and a `problem` column: null for a record; for a record the `skip` policy dropped, the
one-line reason, on a row that carries only `task` and a `position` of its own (its place among the
file's problems). Tokenization passes problem rows through; the pool builder counts them and drops them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.records import fields_of
from recfound.tasks import Task

PROBLEM = "problem"


def records_table(records: list[dict], task: Task, first_position: int = 0) -> pa.Table:
    """An Arrow table of normalized records plus their `position` in the file, counted from
    `first_position` (list fields typed even when every list is empty)."""
    schema = pa.schema([("task", pa.string()), ("id", pa.string())] + [
        (name, pa.list_(pa.string()) if name in ("options", "negatives") else pa.string())
        for name in fields_of(task)])
    table = pa.Table.from_pylist(records, schema=schema)
    positions = pa.array(range(first_position, first_position + len(records)), pa.int64())
    return table.append_column("position", positions)


def with_problems(table: pa.Table, problems: pa.Table) -> pa.Table:
    """`table` with a `problem` column (null on its rows), followed by the rows of `problems`."""
    table = table.append_column(PROBLEM, pa.nulls(table.num_rows, pa.string()))
    if not problems.num_rows:
        return table
    return pa.concat_tables([table, problems], promote_options="default")


def problem_rows(task: str, reasons: list[str], first_position: int = 0) -> pa.Table:
    """The problem rows of `reasons`, numbered from `first_position`."""
    return pa.table({"task": pa.array([task] * len(reasons), pa.string()),
                     "position": pa.array(range(first_position, first_position + len(reasons)), pa.int64()),
                     PROBLEM: pa.array(reasons, pa.string())})


def split_problems(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(the record rows without the `problem` column, the problem rows: task, position, problem)."""
    column = table.column(PROBLEM)
    records = table.drop_columns([PROBLEM])
    if column.null_count == table.num_rows:
        return records, problem_rows("", [])
    return records.filter(pc.is_null(column)), table.filter(pc.is_valid(column)).select(["task", "position", PROBLEM])
