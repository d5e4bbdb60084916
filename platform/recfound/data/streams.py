"""Ray Data streams: one dataset per task per split, read, validated and tokenized in Ray workers.

The driver only lists the split's task files (a local folder or an object-store URI) and plans: each
file is read and validated by a Ray Data read task (`recfound.data.task_source`), whose blocks are
tokenized in parallel in `map_batches`. A training run turns each task's stream into one token pool
(`recfound.data.pools`): one contiguous Arrow table in file order, which the mixer samples from by
row index.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound import storage
from recfound.data.blocks import split_problems, with_problems
from recfound.data.reader import Policy, selected_task_files
from recfound.data.tokenize import CUT_COLUMN, TokenLimits, tokenize_batch
from recfound.data.tokenizer import load_tokenizer, resolve_tokenizer
from recfound.tasks import Task, get_task

if TYPE_CHECKING:
    import ray.data

__all__ = ["TaskStream", "TokenPool", "open_streams", "table_fingerprint", "task_stream"]

TOKENIZE_BATCH_SIZE = 512
READ_BLOCK_BYTES = 1 << 20  # about 1-3k records per block (bench/data_pipeline.py)


def tokenize_block(batch: pa.Table, tokenizer_path: str, kind: str, limits: TokenLimits) -> pa.Table:
    """`tokenize_batch` over a batch's records; its problem rows (`recfound.data.blocks`) pass through."""
    records, problems = split_problems(batch)
    return with_problems(tokenize_batch(records, tokenizer_path, kind, limits), problems)


@dataclass(frozen=True)
class TaskStream:
    """One task's file and the lazy Ray dataset that reads, validates and tokenizes it."""

    task: str
    location: str
    dataset: ray.data.Dataset


def task_stream(location: str, task: Task, tokenizer_path: str | Path, limits: TokenLimits = TokenLimits(),
                policy: Policy = "strict") -> TaskStream:
    """The stream of one task file (see module doc); nothing runs until it is materialized."""
    import ray.data

    from recfound.data.task_source import TaskFileSource

    tokenize = partial(tokenize_block, tokenizer_path=str(tokenizer_path), kind=task.kind.value, limits=limits)
    read = ray.data.read_datasource(TaskFileSource(location, task, policy), override_num_blocks=1)
    # A dataset runs with the context it was made with (`Dataset.context`): here, blocks of 1 MiB, where the
    # default joins a read task's output up to 128 MiB, so the tokenize tasks start while the file is still
    # being read and run in parallel; and no progress bars of Ray Data's (ours suffices).
    read.context.target_max_block_size = READ_BLOCK_BYTES
    read.context.enable_progress_bars = False
    dataset = read.map_batches(tokenize, batch_format="pyarrow", batch_size=TOKENIZE_BATCH_SIZE, zero_copy_batch=True)
    return TaskStream(task.name, location, dataset)


def open_streams(root: storage.Location, split: str, tokenizer: str | Path, tasks: list[str] | None = None,
                 limits: TokenLimits = TokenLimits(), policy: Policy = "strict") -> dict[str, TaskStream]:
    """{task: stream} for one split of `root` (a local folder or a URI); `tasks` defaults to every task
    file present.

    `tokenizer` is anything `resolve_tokenizer` takes ('smollm2', a .gguf file, a tokenizer folder);
    it is resolved and loaded here, in the driver, so a bad one fails before any Ray task starts.
    """
    tokenizer_path = resolve_tokenizer(tokenizer)
    load_tokenizer(tokenizer_path)
    return {name: task_stream(location, get_task(name), tokenizer_path, limits, policy)
            for name, location in selected_task_files(root, split, tasks).items()}


def table_fingerprint(table: pa.Table) -> str:
    """A CRC-32 over every integer column (token ids, positions) in order, so a resumed run can tell
    whether its pools hold the same tokenized records as when its position was saved. The `cut` flags follow
    from the token ids and the limits, and are left out: a run started before they existed resumes."""
    crc = 0
    for name in table.column_names:
        if name == CUT_COLUMN:
            continue
        column = table.column(name)
        while pa.types.is_list(column.type):
            column = pc.list_flatten(column)
        if pa.types.is_integer(column.type):
            crc = zlib.crc32(np.ascontiguousarray(column.to_numpy()).tobytes(), crc)
    return f"{crc:08x}"


@dataclass(frozen=True)
class TokenPool:
    """One task's tokenized records as a single Arrow table (random access for the mixer)."""

    task: str
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    @cached_property
    def fingerprint(self) -> str:
        return table_fingerprint(self.table)
