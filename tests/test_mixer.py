"""The task mixer: exact counts, epochs without repeats, full coverage, sharding, and resume."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from recfound.data.mixer import TaskMixer
from recfound.data.streams import TokenPool

SIZES = {"SA": 7, "PM": 13, "QR": 4}


def make_pools(sizes: dict[str, int] = SIZES) -> dict[str, TokenPool]:
    return {name: TokenPool(name, pa.table({"task": [name] * n, "row": list(range(n))})) for name, n in sizes.items()}


def random_counts(rng: np.random.Generator, tasks: list[str], high: int = 9) -> dict[str, int]:
    return {name: int(rng.integers(0, high)) for name in tasks}


def test_exact_counts_every_step():
    mixer, rng = TaskMixer(make_pools(), seed=3), np.random.default_rng(0)
    for _ in range(300):
        counts = random_counts(rng, mixer.tasks, high=20)  # up to 20 > every pool: crosses epochs
        batch = mixer.next_step(counts)
        assert batch.counts == counts
        got = Counter(batch.rows.column("task").to_pylist())
        assert {t: got.get(t, 0) for t in counts} == counts
        # rows are the pool rows the indices name, grouped by task in mixer order
        expected_rows = [int(i) for t in mixer.tasks for i in batch.indices[t]]
        assert batch.rows.column("row").to_pylist() == expected_rows


def test_each_epoch_is_a_permutation_of_the_pool():
    mixer, rng = TaskMixer(make_pools(), seed=11), np.random.default_rng(1)
    drawn: dict[str, list[int]] = {t: [] for t in mixer.tasks}
    for _ in range(200):
        batch = mixer.next_step(random_counts(rng, mixer.tasks))
        for t in mixer.tasks:
            drawn[t].extend(int(i) for i in batch.indices[t])
    for task, size in SIZES.items():
        full_epochs = len(drawn[task]) // size
        assert full_epochs >= 10
        epochs = [drawn[task][e * size:(e + 1) * size] for e in range(full_epochs)]
        for epoch in epochs:  # no repeat inside an epoch, and every record once
            assert sorted(epoch) == list(range(size))
        assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs
        assert mixer.state_dict()["tasks"][task]["epoch"] == full_epochs


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_step_without_overlap(world_size):
    """The records of a step do not depend on the number of workers: 2 or 4 ranks together draw exactly what one
    worker draws, each record once (the run on several nodes, test_multinode, checks it end to end on 2 and 1)."""
    pools = make_pools({"SA": 50, "PM": 40})
    single = TaskMixer(pools, seed=5)
    ranks = [TaskMixer(pools, seed=5, rank=rank, world_size=world_size) for rank in range(world_size)]
    rng = np.random.default_rng(2)
    for _ in range(100):
        counts = random_counts(rng, single.tasks, high=12)
        whole, shares = single.next_step(counts), [mixer.next_step(counts) for mixer in ranks]
        for t in single.tasks:
            assert sum(share.counts[t] for share in shares) == counts[t]
            assert sorted(np.concatenate([share.indices[t] for share in shares])) == sorted(whole.indices[t])
            if len(set(whole.indices[t])) == counts[t]:  # (a step that crosses an epoch may repeat a record)
                assert sum(len(set(share.indices[t])) for share in shares) == counts[t]  # no record on two ranks
        sizes = [share.rows.num_rows for share in shares]
        assert max(sizes) - min(sizes) <= 1  # ranks get balanced shares


def test_resume_from_saved_position_gives_the_identical_sequence():
    rng = np.random.default_rng(4)
    schedule = [random_counts(rng, list(SIZES), high=15) for _ in range(60)]
    original = TaskMixer(make_pools(), seed=9, rank=1, world_size=2)
    for counts in schedule[:25]:
        original.next_step(counts)
    state = json.loads(json.dumps(original.state_dict()))  # what a checkpoint stores
    resumed = TaskMixer(make_pools(), seed=0, rank=1, world_size=2)
    resumed.load_state_dict(state)
    for counts in schedule[25:]:
        a, b = original.next_step(counts), resumed.next_step(counts)
        assert a.step == b.step
        assert all(np.array_equal(a.indices[t], b.indices[t]) for t in SIZES)


def test_different_seeds_give_different_orders():
    a, b = TaskMixer(make_pools(), seed=1), TaskMixer(make_pools(), seed=2)
    counts = {"SA": 7, "PM": 13, "QR": 4}
    assert any(not np.array_equal(a.next_step(counts).indices[t], b.next_step(counts).indices[t]) for t in SIZES)


def test_bad_input_is_rejected():
    mixer = TaskMixer(make_pools(), seed=0)
    with pytest.raises(KeyError, match="without a pool: AP"):
        mixer.next_step({"AP": 1})
    with pytest.raises(ValueError, match="non-negative integers"):
        mixer.next_step({"SA": -1})
    with pytest.raises(ValueError, match="rank must be in"):
        TaskMixer(make_pools(), rank=2, world_size=2)
    with pytest.raises(ValueError, match="empty pool for task"):
        TaskMixer(make_pools({"SA": 0}))
    state = mixer.state_dict()
    other = TaskMixer(make_pools({**SIZES, "SA": 8}))
    with pytest.raises(ValueError, match="pool of task SA has 8 records, saved state 7"):
        other.load_state_dict(state)
    shuffled = make_pools()
    shuffled["PM"] = TokenPool("PM", shuffled["PM"].table.take(list(reversed(range(SIZES["PM"])))))
    with pytest.raises(ValueError, match="pool of task PM holds other records"):
        TaskMixer(shuffled).load_state_dict(state)
