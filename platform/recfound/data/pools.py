"""Token pools built off the driver: each task's tokenized blocks become one table in the object store.

Per task, a Ray task takes the stream's tokenized blocks (by reference: the driver never fetches them),
concatenates them, sorts them by `position` (Ray Data may finish blocks out of order; the mixer needs
the file order on every run), and returns the table plus a few numbers: its size, its fingerprint, what
the `skip` policy dropped, what the token limits shortened. The driver keeps a `PoolRef` per task; whoever needs the rows (a training
worker, the demo's mixer) fetches them.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from recfound.console import quiet_process
from recfound.data.blocks import PROBLEM, split_problems
from recfound.data.cuts import CutCounts
from recfound.data.reader import RecordError, SkipReport
from recfound.data.streams import TaskStream, TokenPool, table_fingerprint
from recfound.progress import Progress

if TYPE_CHECKING:
    import ray

# Ray Data 2.60 (pinned) logs a failed read task's traceback from these before raising it, and warns from
# the other whenever a dataset starts while no CPU is free.
RAY_DATA_FAILURE_LOGGERS = ("ray.data.exceptions", "ray.data._internal.execution.streaming_executor_state")
RAY_DATA_CPU_WARNING_LOGGER = "ray.data.dataset"
STREAMS_AT_ONCE = 2  # without an autoscaler (bench/data_pipeline.py: small tasks leave the CPUs idle alone)
STREAM_THREAD = "recfound-stream"


@dataclass(frozen=True)
class PoolRef:
    """One task's pool, held in the object store: `ray.get(ref)` is the table of `TokenPool(task, table)`."""

    task: str
    ref: ray.ObjectRef
    size: int
    fingerprint: str  # `TokenPool.fingerprint` of the table
    from_cache: bool = False  # read back from the pool cache (`recfound.data.pool_cache`), not tokenized
    cut: CutCounts = CutCounts()  # what the token limits shortened

    def __len__(self) -> int:
        return self.size

    def fetch(self) -> TokenPool:
        """The pool's rows, here."""
        import ray

        return TokenPool(self.task, ray.get(self.ref))


@dataclass(frozen=True)
class PoolSummary:
    """What the driver learns about a pool it does not hold."""

    size: int
    fingerprint: str
    skipped: SkipReport
    cut: CutCounts


def build_pool(task: str, max_reasons: int, *blocks: pa.Table,
               keep_in: tuple[str, str] | None = None) -> tuple[pa.Table, PoolSummary]:
    """(the task's pool table in file order, its summary) from its tokenized blocks (see module doc);
    `keep_in` is the pool cache's folder and key for it (`recfound.data.pool_cache`): the file is written
    here, on the driver's node, so the driver never fetches the table."""
    records, problems = split_problems(pa.concat_tables(blocks))
    table = records.sort_by("position").combine_chunks()
    reasons = problems.sort_by("position").column(PROBLEM).to_pylist()
    skipped = SkipReport(max_reasons, Counter({task: len(reasons)} if reasons else {}), reasons[:max_reasons])
    summary = PoolSummary(table.num_rows, table_fingerprint(table), skipped, CutCounts.of_table(table))
    if keep_in is not None and not reasons and table.num_rows:
        from recfound.data.pool_cache import write_pool

        write_pool(Path(keep_in[0]), keep_in[1], table)
    return table, summary


def read_error(error: BaseException) -> RecordError | OSError | None:
    """The error a read task raised for its file (a bad record, a missing file, a store that refused),
    inside the error Ray raised in its place: the `cause` of a Ray task error, followed down through
    Ray's own errors and explicit causes only; None if none."""
    link: BaseException | None = error
    while link is not None:
        if not type(link).__module__.startswith("ray.") and isinstance(link, (RecordError, OSError)):
            return link
        task_cause = getattr(link, "cause", None)  # Ray's RayTaskError: what the task raised
        link = task_cause if isinstance(task_cause, BaseException) else link.__cause__
    return None


class _DropReadErrorLogs(logging.Filter):
    """Drops Ray Data's report of a read task's error: `tokenized_blocks` raises it as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]  # logged while handling it
        return error is None or read_error(error) is None


class _DropBusyCpuWarning(logging.Filter):
    """Drops Ray Data's "no available CPUs, the Dataset job will hang" when one of our streams starts
    while the other holds the CPUs: it waits for them, it does not hang."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (threading.current_thread().name.startswith(STREAM_THREAD)
                    and "does not have any available CPUs" in record.getMessage())


def _quiet_ray_data() -> None:
    for name, kind in [*((name, _DropReadErrorLogs) for name in RAY_DATA_FAILURE_LOGGERS),
                       (RAY_DATA_CPU_WARNING_LOGGER, _DropBusyCpuWarning)]:
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


def tokenized_blocks(stream: TaskStream) -> list[ray.ObjectRef]:
    """Run a stream; a read task's error (a bad record under `strict`, a file it cannot read) is raised
    as itself, not as Ray's wrapping of it."""
    try:
        return stream.dataset.to_arrow_refs()
    except Exception as error:
        cause = read_error(error)
        if cause is None:
            raise
        raise cause from None


@cache
def _remote_build_pool():
    """`build_pool` as a Ray task (made on first use: importing Ray here, before a cluster is started with
    the product's settings, would fix Ray's own settings too early)."""
    import ray

    return ray.remote(num_returns=2)(build_pool)


def pool_of(stream: TaskStream, max_reasons: int,
            keep_in: tuple[str, str] | None = None) -> tuple[ray.ObjectRef, PoolSummary]:
    """Run one task's stream and build its pool: (the pool table's ref, its summary).

    The pool is built on this (the driver's) node, so it lives in that node's object store: a training
    worker's node that goes away takes only copies with it, and the restarted workers fetch the pools
    again (a pool built on a lost node would have to be rebuilt from Ray Data's blocks, which are gone).
    It asks for no CPU: a short concatenation, on a head that may keep its CPUs for the drivers."""
    import ray
    from recfound.cluster import on_this_node

    blocks = tokenized_blocks(stream)  # (starts Ray when nothing did yet)
    table, summary = _remote_build_pool().options(num_cpus=0, scheduling_strategy=on_this_node()).remote(
        stream.task, max_reasons, *blocks, keep_in=keep_in)
    return table, ray.get(summary)


def materialize_pools(streams: dict[str, TaskStream], report: SkipReport | None = None,
                      progress: bool = True, keep_in: dict[str, tuple[str, str]] | None = None) -> dict[str, PoolRef]:
    """Run each task's stream and build its pool off the driver; `report` gets what `skip` dropped;
    `keep_in` names each task's pool cache folder and key (`build_pool`), if any.

    Each stream is parallel over its blocks. On a fixed cluster `STREAMS_AT_ONCE` run at a time (a small
    task's stream alone leaves the CPUs mostly idle while Ray Data starts and stops it); with an
    autoscaler one at a time, since streams at once ask for more CPUs than the cluster has, which the
    autoscaler would answer with nodes (GPU nodes, on the shipped clusters) just to tokenize. The first
    error in task order is raised once the streams running beside it have finished.
    """
    import ray

    from recfound.cluster import has_autoscaler

    quiet_process()
    _quiet_ray_data()
    bar = Progress(len(streams), "tokenized task", unit="records") if progress else None
    max_reasons = report.max_reasons if report else 0
    pools: dict[str, PoolRef] = {}
    autoscaled = ray.is_initialized() and has_autoscaler()  # not yet initialized: Ray Data starts a local Ray
    threads = ThreadPoolExecutor(1 if autoscaled else STREAMS_AT_ONCE, thread_name_prefix=STREAM_THREAD)
    try:
        running = [(stream, threads.submit(pool_of, stream, max_reasons, (keep_in or {}).get(stream.task)))
                   for stream in streams.values()]
        for stream, future in running:
            table, summary = future.result()
            if not summary.size:
                raise ValueError(f"{stream.location}: no valid records for task {stream.task}")
            if report is not None:
                report.merge(summary.skipped)
            pools[stream.task] = PoolRef(stream.task, table, summary.size, summary.fingerprint, cut=summary.cut)
            if bar:
                bar.update(1, summary.size)
    finally:
        threads.shutdown(cancel_futures=True)
    return pools
