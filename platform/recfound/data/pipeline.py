"""The data path end to end for one split: streams -> pools -> mixer steps -> collated arrays.

Used by the demo (before training exists it runs the data pipeline alone) and by the benchmark.
Counts per step come from equal ratios here; the training loop gets them from the S2Sched actor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound import storage
from recfound.data.collate import collate_embedding, collate_generative
from recfound.data.cuts import CutCounts
from recfound.data.mixer import TaskMixer
from recfound.data.pool_cache import PoolKeys, read_pool, remove_leftovers
from recfound.data.pools import PoolRef, materialize_pools
from recfound.data.reader import selected_task_files
from recfound.data.streams import TokenPool, open_streams
from recfound.data.tokenize import TokenLimits
from recfound.data.tokenizer import load_tokenizer, resolve_tokenizer
from recfound.progress import Progress, format_table
from recfound.sched import allocate
from recfound.tasks import Kind, get_task


def equal_counts(batch_size: int, tasks: list[str]) -> dict[str, int]:
    """Per-task counts of a batch under equal ratios (the warm-up and `uniform` schedule)."""
    counts = allocate(batch_size, np.full(len(tasks), 1.0 / len(tasks)))
    return dict(zip(tasks, (int(c) for c in counts)))


def pools_by_kind(pools: dict[str, TokenPool]) -> dict[Kind, dict[str, TokenPool]]:
    """Split task pools into the embedding and generative groups (registry order kept)."""
    grouped: dict[Kind, dict[str, TokenPool]] = {Kind.EMBEDDING: {}, Kind.GENERATIVE: {}}
    for name, pool in pools.items():
        grouped[get_task(name).kind][name] = pool
    return grouped


@dataclass
class MixSummary:
    """What a run of mixer steps drew: records and tokens per task, epochs completed, throughput."""

    steps: int = 0
    records: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)
    pool_sizes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self) -> str:
        rows = [[name, get_task(name).kind.value, self.pool_sizes[name], self.records[name], self.epochs[name],
                 self.tokens[name]] for name in self.records]
        rows.append(["total", "", sum(self.pool_sizes.values()), sum(self.records.values()), "",
                     sum(self.tokens.values())])
        return format_table(["task", "kind", "pool", "drawn", "epochs done", "tokens"], rows)


def tokens_in(rows: pa.Table) -> int:
    """All token ids in a table of tokenized rows (prompt + response, or query + documents)."""
    total = 0
    for name in rows.column_names:
        column = rows.column(name)
        while pa.types.is_list(column.type) and pa.types.is_list(column.type.value_type):
            column = pc.list_flatten(column)
        if pa.types.is_list(column.type):
            total += len(pc.list_flatten(column))
    return total


def run_mixer(pools: dict[str, TokenPool], tokenizer_path: str, steps: int, embedding_batch: int,
              generative_batch: int, seed: int = 0, progress: bool = True) -> MixSummary:
    """Draw `steps` steps of both kinds with equal ratios, collating each, and summarise what was drawn."""
    import time

    _, info = load_tokenizer(tokenizer_path)
    grouped = pools_by_kind(pools)
    mixers = {kind: TaskMixer(group, seed=seed) for kind, group in grouped.items() if group}
    batch_sizes = {Kind.EMBEDDING: embedding_batch, Kind.GENERATIVE: generative_batch}
    collate = {Kind.EMBEDDING: collate_embedding, Kind.GENERATIVE: collate_generative}
    summary = MixSummary(pool_sizes={n: len(p) for n, p in pools.items()})
    summary.records = dict.fromkeys(pools, 0)
    summary.tokens = dict.fromkeys(pools, 0)
    bar = Progress(steps, "mix step", unit="records") if progress else None
    start = time.perf_counter()
    for _ in range(steps):
        drawn = 0
        for kind, mixer in mixers.items():
            batch = mixer.next_step(equal_counts(batch_sizes[kind], mixer.tasks))
            for name, n in batch.counts.items():
                summary.records[name] += n
            collate[kind](batch.rows, info.pad_id)
            offset = 0
            for name, n in batch.counts.items():  # rows are grouped by task, in mixer order
                summary.tokens[name] += tokens_in(batch.rows.slice(offset, n))
                offset += n
            drawn += batch.rows.num_rows
        if bar:
            bar.update(1, drawn)
    summary.seconds = time.perf_counter() - start
    summary.steps = steps
    summary.epochs = {n: s["epoch"] for m in mixers.values() for n, s in m.state_dict()["tasks"].items()}
    return summary


def load_pools(root: storage.Location, split: str, tokenizer_path: str, limits: TokenLimits = TokenLimits(),
               tasks: list[str] | None = None, cache: Path | None = None) -> dict[str, PoolRef]:
    """Read, validate (strict) and tokenize every task file of a split of `root` (a local folder or a URI)
    in Ray Data, and build each task's pool in the object store (the driver holds only `PoolRef`s). With a
    `cache` folder (`recfound.data.pool_cache`), a pool kept there is read back instead, and the pools
    tokenized here are kept there."""
    import ray

    files = selected_task_files(root, split, tasks)
    keys: dict[str, str] = {}
    if cache is not None:
        remove_leftovers(cache)
        of = PoolKeys(resolve_tokenizer(tokenizer_path), limits).of
        keys = {task: key for task, location in files.items() if (key := of(location, get_task(task)))}
    pools: dict[str, PoolRef] = {}
    for task, key in keys.items():
        kept = read_pool(cache, key)
        if kept is not None:
            table, fingerprint = kept
            pools[task] = PoolRef(task, ray.put(table), table.num_rows, fingerprint, from_cache=True,
                                  cut=CutCounts.of_table(table))
    to_tokenize = [task for task in files if task not in pools]
    if to_tokenize:
        streams = open_streams(root, split, tokenizer_path, tasks=to_tokenize, limits=limits)
        keep_in = {task: (str(cache), key) for task, key in keys.items()}
        pools.update(materialize_pools(streams, keep_in=keep_in or None))
    return {task: pools[task] for task in files}
