"""The per-step task mixer: exactly n_i records of task i per step, split across the ranks.

Each task's pool is read in a random order without replacement; when it is used up, a new epoch
starts with a fresh order. Orders are derived from (seed, task name, epoch), so every rank computes
the same global selection for a step without talking to the others and takes its own share
(`selection[rank::world_size]`): the ranks together consume exactly the step's counts, without
overlap. The position (per-task epoch and offset, step) is a small JSON-able dict; restoring it
continues the identical sequence.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from recfound.data.streams import TokenPool

STATE_VERSION = 1


@dataclass
class _Cursor:
    """Where one task's sampling stands: the epoch and the offset inside that epoch's order."""

    size: int
    epoch: int = 0
    offset: int = 0
    order: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class StepBatch:
    """This rank's records of one step (Arrow rows, grouped by task in mixer order) and its counts."""

    step: int
    rows: pa.Table
    counts: dict[str, int]
    indices: dict[str, np.ndarray]  # pool row indices per task (for tests and debugging)


class TaskMixer:
    """Draws per-step, per-task counts of records from token pools (see module doc)."""

    def __init__(self, pools: dict[str, TokenPool], seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not pools:
            raise ValueError("TaskMixer needs at least one task pool")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size): rank={rank}, world_size={world_size}")
        empty = [name for name, pool in pools.items() if len(pool) == 0]
        if empty:
            raise ValueError(f"empty pool for task(s) {', '.join(empty)}")
        self.pools = pools
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0
        self._cursors = {name: _Cursor(len(pool)) for name, pool in pools.items()}

    @property
    def tasks(self) -> list[str]:
        return list(self.pools)

    def _order(self, task: str, cursor: _Cursor) -> np.ndarray:
        if cursor.order is None:
            rng = np.random.default_rng([self.seed, zlib.crc32(task.encode()), cursor.epoch])
            cursor.order = rng.permutation(cursor.size)
        return cursor.order

    def _draw(self, task: str, count: int) -> np.ndarray:
        """The next `count` pool indices of a task (global, before sharding), crossing epochs."""
        cursor, taken = self._cursors[task], []
        while count > 0:
            order = self._order(task, cursor)
            chunk = order[cursor.offset: cursor.offset + count]
            taken.append(chunk)
            cursor.offset += len(chunk)
            count -= len(chunk)
            if cursor.offset == cursor.size:
                cursor.epoch, cursor.offset, cursor.order = cursor.epoch + 1, 0, None
        return np.concatenate(taken) if taken else np.empty(0, dtype=np.int64)

    def next_step(self, counts: dict[str, int]) -> StepBatch:
        """This rank's share of a step that holds exactly counts[task] records of each task."""
        unknown = set(counts) - set(self.pools)
        if unknown:
            raise KeyError(f"counts name task(s) without a pool: {', '.join(sorted(unknown))}")
        bad = {name: n for name, n in counts.items() if int(n) != n or n < 0}
        if bad:
            raise ValueError(f"counts must be non-negative integers, got {bad}")
        selection = [(name, index) for name in self.tasks for index in self._draw(name, int(counts.get(name, 0)))]
        mine = selection[self.rank::self.world_size]
        indices = {name: np.array([i for n, i in mine if n == name], dtype=np.int64) for name in self.tasks}
        parts = [self.pools[name].table.take(idx) for name, idx in indices.items() if len(idx)]
        rows = pa.concat_tables(parts) if parts else self.pools[self.tasks[0]].table.slice(0, 0)
        self.step += 1
        return StepBatch(self.step, rows, {name: len(idx) for name, idx in indices.items()}, indices)

    def state_dict(self) -> dict:
        """The mixer's position as a JSON-able dict (orders are re-derived from the seed)."""
        return {
            "version": STATE_VERSION, "seed": self.seed, "step": self.step,
            "tasks": {name: {"size": c.size, "epoch": c.epoch, "offset": c.offset,
                             "fingerprint": self.pools[name].fingerprint} for name, c in self._cursors.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved position; the pools must be the same as when it was saved (size and fingerprint)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"mixer state version {state.get('version')!r} is not {STATE_VERSION}")
        if set(state["tasks"]) != set(self.pools):
            raise ValueError(f"saved mixer tasks {sorted(state['tasks'])} differ from {sorted(self.pools)}")
        for name, saved in state["tasks"].items():
            if saved["size"] != len(self.pools[name]):
                raise ValueError(f"pool of task {name} has {len(self.pools[name])} records, saved state {saved['size']}")
            if saved["fingerprint"] != self.pools[name].fingerprint:
                raise ValueError(f"pool of task {name} holds other records than when the state was saved "
                                 "(same size, different token ids): resume with the same data and tokenizer")
        self.seed, self.step = state["seed"], state["step"]
        self._cursors = {name: _Cursor(s["size"], s["epoch"], s["offset"]) for name, s in state["tasks"].items()}
