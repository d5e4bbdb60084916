"""The scheduler's bookkeeping without Ray (policy, warm-up, modes, aggregation, versions, state) and the plot."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recfound.sched import (KindSchedule, KindSpec, NotReady, SchedConfig, Scheduler, ScheduleSpec, allocate,
                            plot_ratios, s2sched_ratios)

TASKS = {"embedding": ["U2I", "Q2I", "I2I"], "generative": ["QR", "SA", "PM"]}
RATES = {"U2I": 0.08, "Q2I": 0.01, "I2I": 0.0, "QR": 0.05, "SA": -0.01, "PM": 0.002}


def make_spec(world_size=2, eval_interval=1, total_steps=40, **config):
    kinds = {"embedding": KindSpec(TASKS["embedding"], 32, (100, 400, 500)),
             "generative": KindSpec(TASKS["generative"], 16, (10, 30, 60))}
    config = {"window": 8, "temperature": 10.0, "warmup_ratio": 0.0, **config}
    return ScheduleSpec(kinds, total_steps, world_size, eval_interval, SchedConfig(**{"preset": "paper", **config}))


def shares(step, world_size, seed=0):
    """Per rank: per-task loss sums and counts of a step's validation samples, and the exact means."""
    rng = np.random.default_rng([seed, step])
    per_rank = [({}, {}) for _ in range(world_size)]
    means = {}
    for task, rate in RATES.items():
        samples = (1 + math.exp(-rate * step)) * rng.uniform(0.8, 1.2, 4 * world_size + 3)
        means[task] = math.fsum(samples) / len(samples)
        for rank, part in enumerate(np.array_split(samples, world_size)):
            per_rank[rank][0][task] = math.fsum(part)
            per_rank[rank][1][task] = len(part)
    return per_rank, means


def run_points(scheduler, steps, order_seed=0):
    """Report the points of `steps` from every rank in a shuffled order; returns the global means."""
    rng = np.random.default_rng(order_seed)
    means_by_step = {}
    for step in steps:
        per_rank, means_by_step[step] = shares(step, scheduler.spec.world_size)
        for rank in rng.permutation(scheduler.spec.world_size):
            scheduler.report(step, int(rank), *per_rank[rank])
    return means_by_step


# ----- config, warm-up, modes -----

@pytest.mark.parametrize("ratio,total,expected",
                         [(0.1, 70, 7), (0.1, 71, 8), (0.1, 320, 32), (0.0, 50, 0), (1.0, 9, 9)])
def test_warmup_steps(ratio, total, expected):
    assert SchedConfig(warmup_ratio=ratio).warmup_steps(total) == expected


@pytest.mark.parametrize("kwargs,match", [({"window": 1}, "window"), ({"temperature": 0}, "temperature"),
                                          ({"warmup_ratio": 1.5}, "warmup_ratio"), ({"mode": "fancy"}, "mode")])
def test_config_is_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SchedConfig(**kwargs)


def test_kind_spec_and_pool_sizes_are_checked():
    with pytest.raises(ValueError, match="distinct"):
        KindSpec(["A", "A"], 4)
    with pytest.raises(ValueError, match="batch_size"):
        KindSpec(["A"], 0)
    with pytest.raises(ValueError, match="pool_sizes"):
        KindSpec(["A", "B"], 4, (3,))
    with pytest.raises(ValueError, match=r"mode pool_size need\(s\) the pool sizes of tasks"):
        KindSchedule(KindSpec(["A", "B"], 4), SchedConfig(mode="pool_size", preset="paper"), 0)


def test_warmup_then_s2sched_uniform_and_pool_size_modes():
    spec = KindSpec(["A", "B", "C"], 10, (1, 1, 2))
    history = [[1.0, 1.0, 1.0], [0.8, 0.99, 1.0], [0.7, 0.98, 1.01]]
    schedules = {mode: KindSchedule(spec, SchedConfig(window=4, mode=mode, preset="paper"), warmup_steps=5) for mode in
                 ("s2sched", "uniform", "pool_size")}
    for schedule in schedules.values():
        for row in history:
            schedule.add_point(row)
    s2sched = schedules["s2sched"]
    np.testing.assert_array_equal(s2sched.ratios(5, 3), [1 / 3] * 3)  # still in warm-up
    np.testing.assert_allclose(s2sched.ratios(6, 3), s2sched_ratios(history, 4, 10.0), rtol=1e-13)
    np.testing.assert_allclose(s2sched.ratios(6, 2), s2sched_ratios(history[:2], 4, 10.0), rtol=1e-13)
    np.testing.assert_array_equal(schedules["uniform"].ratios(6, 3), [1 / 3] * 3)
    np.testing.assert_array_equal(schedules["pool_size"].ratios(1, 0), [0.25, 0.25, 0.5])
    assert schedules["pool_size"].counts(1, 0).tolist() == [3, 2, 5]
    # the terms are still recorded in the ablation modes
    assert schedules["uniform"].history()["s2sched"][-1] == pytest.approx(s2sched.history()["s2sched"][-1])


def test_size_prior_uses_the_kind_pool_sizes():
    spec = KindSpec(["A", "B"], 10, (1, 3))
    schedule = KindSchedule(spec, SchedConfig(preset="paper", size_prior=True, warmup_ratio=0), 0)
    for row in [[1.0, 1.0], [0.8, 1.0], [0.6, 1.0]]:
        schedule.add_point(row)
    expected = s2sched_ratios([[1.0, 1.0], [0.8, 1.0], [0.6, 1.0]], 64, 10.0, size_prior=[1, 3])
    np.testing.assert_allclose(schedule.ratios(4, 3), expected, rtol=1e-13)


# ----- aggregation and versions -----

@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_points_are_exact_global_means_in_any_order(world_size):
    scheduler = Scheduler(make_spec(world_size=world_size))
    means = run_points(scheduler, range(1, 13), order_seed=world_size)
    for kind, tasks in TASKS.items():
        history = [[means[step][t] for t in tasks] for step in range(1, 13)]
        result = scheduler.counts(13)
        got = [result["ratios"][kind][t] for t in tasks]
        np.testing.assert_allclose(got, s2sched_ratios(history, 8, 10.0), rtol=0, atol=1e-12)
        assert list(result["counts"][kind].values()) == allocate(32 if kind == "embedding" else 16, got).tolist()
        np.testing.assert_allclose(scheduler.history()["kinds"][kind]["losses"], history, rtol=1e-15)


def test_counts_wait_for_the_point_they_need():
    scheduler = Scheduler(make_spec(world_size=2, eval_interval=3))
    assert scheduler.counts(3)["based_on_step"] == 0  # steps 1-3 need no point
    assert not scheduler.ready(4)
    with pytest.raises(NotReady, match=r"step 4 need the validation point of step 3.*ranks \[0, 1\] of 2"):
        scheduler.counts(4)
    run_points(scheduler, [3])
    assert scheduler.counts(6)["based_on_step"] == 3 and not scheduler.ready(7)
    per_rank, _ = shares(6, 2)
    scheduler.report(6, 1, *per_rank[1])
    with pytest.raises(NotReady, match=r"ranks \[0\] of 2"):
        scheduler.counts(7)


def test_protocol_errors():
    scheduler = Scheduler(make_spec(world_size=2))
    per_rank, _ = shares(1, 2)
    with pytest.raises(ValueError, match="expects the point of step 1"):
        scheduler.report(2, 0, *per_rank[0])
    scheduler.report(1, 0, *per_rank[0])
    with pytest.raises(ValueError, match="rank 0 already reported the point of step 1"):
        scheduler.report(1, 0, *per_rank[0])
    with pytest.raises(ValueError, match="rank must be an integer"):
        scheduler.report(1, 2, *per_rank[0])
    sums, counts = per_rank[1]
    with pytest.raises(ValueError, match=r"loss_sums: missing tasks \['PM'\]"):
        scheduler.report(1, 1, {t: v for t, v in sums.items() if t != "PM"}, counts)
    with pytest.raises(ValueError, match="counts must be integers"):
        scheduler.report(1, 1, sums, {**counts, "PM": -1})
    with pytest.raises(ValueError, match="step must be an integer"):
        scheduler.counts(0)
    assert scheduler.report(1, 1, sums, counts)["complete"]


def test_a_point_without_samples_or_with_nan_is_skipped():
    scheduler = Scheduler(make_spec(world_size=2))
    run_points(scheduler, [1, 2])
    per_rank, _ = shares(3, 2)
    per_rank[0][0]["QR"] = float("nan")
    scheduler.report(3, 0, *per_rank[0])
    result = scheduler.report(3, 1, *per_rank[1])
    assert result["complete"] and "QR: loss sums [nan" in result["skipped"]
    assert scheduler.counts(4)["based_on_step"] == 2  # the ratios of point 2 stay in force
    run_points(scheduler, [4])
    assert scheduler.counts(5)["based_on_step"] == 4
    assert scheduler.history()["eval_steps"] == [1, 2, 4]
    assert scheduler.history()["skipped"][0]["step"] == 3


def test_state_round_trip_through_json_continues_identically():
    spec = make_spec(world_size=2, warmup_ratio=0.1, logit_scale=True, min_ratio=0.05)
    original = Scheduler(spec)
    run_points(original, range(1, 21))
    restored = Scheduler.from_state(json.loads(json.dumps(original.state())))
    run_points(original, range(21, 31), order_seed=5)
    run_points(restored, range(21, 31), order_seed=6)
    for step in range(1, 32):
        assert restored.counts(step) == original.counts(step)
    assert restored.history() == original.history()


def test_state_version_is_checked():
    state = Scheduler(make_spec()).state()
    with pytest.raises(ValueError, match="state version"):
        Scheduler.from_state({**state, "version": 99})


# ----- history and plot -----

def test_history_marks_where_the_ratios_change():
    scheduler = Scheduler(make_spec(world_size=1, eval_interval=2, total_steps=20, warmup_ratio=0.25))
    run_points(scheduler, [2, 4, 6, 8])
    history = scheduler.history()
    assert history["warmup_steps"] == 5 and history["last_ready_step"] == 10
    assert history["kinds"]["embedding"]["steps"] == [1, 3, 5, 6, 7, 9]
    ratios = history["kinds"]["embedding"]["ratios"]
    assert ratios[:3] == [[1 / 3] * 3] * 3 and ratios[3] != ratios[0]
    json.dumps(history)


def test_plot_writes_a_png_atomically(tmp_path):
    scheduler = Scheduler(make_spec(world_size=1, total_steps=30, warmup_ratio=0.2))
    run_points(scheduler, range(1, 25))
    path = tmp_path / "plots" / "ratios.png"
    plot_ratios(scheduler.history(), path, title="S2Sched")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["ratios.png"]  # no temporary file left


def test_numpy_scalars_from_a_sweep_are_accepted():
    import numpy as np

    from recfound.sched import KindSpec, SchedConfig

    assert SchedConfig(warmup_ratio=np.float64(0.1)).warmup_steps(70) == 7
    spec = KindSpec(["SA", "PM"], np.int64(8))
    assert spec.batch_size == 8 and type(spec.batch_size) is int
