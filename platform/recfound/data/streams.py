"""Ray Data streams: one dataset per task per split, tokenized in `map_batches`, and token pools.

Records are read and validated first (so a bad record is reported with file, line and field, not
as a wrapped worker exception), then handed to Ray Data, which tokenizes them in parallel. A
training run materializes each task's tokenized dataset once into a `TokenPool`: one contiguous
Arrow table in file order, which the mixer samples from by row index.
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

from recfound.console import quiet_process
from recfound.data.reader import Policy, SkipReport, read_records, selected_task_files
from recfound.data.records import fields_of
from recfound.data.tokenize import TokenLimits, tokenize_batch
from recfound.data.tokenizer import load_tokenizer, resolve_tokenizer
from recfound.progress import Progress
from recfound.tasks import Task, get_task

if TYPE_CHECKING:
    import ray.data

TOKENIZE_BATCH_SIZE = 512
BLOCK_ROWS = 4 * TOKENIZE_BATCH_SIZE


def records_table(records: list[dict], task: Task) -> pa.Table:
    """An Arrow table of normalized records plus their `position` in the file (list fields typed
    even when every list is empty)."""
    schema = pa.schema([("task", pa.string()), ("id", pa.string())] + [
        (name, pa.list_(pa.string()) if name in ("options", "negatives") else pa.string())
        for name in fields_of(task)])
    table = pa.Table.from_pylist(records, schema=schema)
    return table.append_column("position", pa.array(range(len(records)), pa.int64()))


def task_stream(records: list[dict], task: Task, tokenizer_path: str | Path,
                limits: TokenLimits = TokenLimits()) -> ray.data.Dataset:
    """A Ray Data dataset of one task's records, tokenized lazily in `map_batches`."""
    import ray.data

    tokenize = partial(tokenize_batch, tokenizer_path=str(tokenizer_path), kind=task.kind.value, limits=limits)
    table = records_table(records, task)
    blocks = [table.slice(start, BLOCK_ROWS) for start in range(0, table.num_rows, BLOCK_ROWS)]  # parallelism
    return ray.data.from_arrow(blocks).map_batches(
        tokenize, batch_format="pyarrow", batch_size=TOKENIZE_BATCH_SIZE, zero_copy_batch=True)


def open_streams(root: Path | str, split: str, tokenizer: str | Path, tasks: list[str] | None = None,
                 limits: TokenLimits = TokenLimits(), policy: Policy = "strict",
                 report: SkipReport | None = None) -> dict[str, ray.data.Dataset]:
    """{task: tokenized Ray dataset} for one split; `tasks` defaults to every task file present.

    `tokenizer` is anything `resolve_tokenizer` takes ('smollm2', a .gguf file, a tokenizer folder);
    it is resolved and loaded here, in the driver, so a bad one fails before any Ray task starts.
    """
    tokenizer_path = resolve_tokenizer(tokenizer)
    load_tokenizer(tokenizer_path)
    streams = {}
    for name, path in selected_task_files(root, split, tasks).items():
        task = get_task(name)
        records = read_records(path, task, policy, report)
        if not records:
            raise ValueError(f"{path}: no valid records for task {name}")
        streams[name] = task_stream(records, task, tokenizer_path, limits)
    return streams


@dataclass(frozen=True)
class TokenPool:
    """One task's tokenized records as a single Arrow table (random access for the mixer)."""

    task: str
    table: pa.Table

    def __len__(self) -> int:
        return self.table.num_rows

    @cached_property
    def fingerprint(self) -> str:
        """A CRC-32 over every integer column (token ids, positions) in order, so a resumed run can
        tell whether its pools hold the same tokenized records as when its position was saved."""
        crc = 0
        for name in self.table.column_names:
            column = self.table.column(name)
            while pa.types.is_list(column.type):
                column = pc.list_flatten(column)
            if pa.types.is_integer(column.type):
                crc = zlib.crc32(np.ascontiguousarray(column.to_numpy()).tobytes(), crc)
        return f"{crc:08x}"


def materialize_pools(streams: dict, progress: bool = True) -> dict[str, TokenPool]:
    """Run each task's stream and collect it into one contiguous Arrow table in file order.

    Tasks run one after another (each is parallel over its blocks): concurrent executions on a
    small cluster only compete for the same CPUs.
    """
    import ray
    import ray.data

    # Ray Data's own progress bars and plan logs repeat ours, once per task (and, from an actor such as a
    # sweep's trial driver, through the log monitor line by line): our progress line suffices.
    ray.data.DataContext.get_current().enable_progress_bars = False
    quiet_process()
    bar = Progress(len(streams), "tokenized task", unit="records") if progress else None
    pools = {}
    for name, dataset in streams.items():
        tables = ray.get(dataset.to_arrow_refs())
        # Ray Data may finish blocks out of order; the mixer needs the file order on every run.
        pools[name] = TokenPool(name, pa.concat_tables(tables).sort_by("position").combine_chunks())
        if bar:
            bar.update(1, len(pools[name]))
    return pools
