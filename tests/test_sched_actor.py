"""The scheduler actor on a private local Ray cluster: simulated ranks, waiting, save/kill/restore."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recfound.sched import KindSpec, SchedConfig, ScheduleSpec, SchedulerClient, s2sched_ratios, start_scheduler

TASKS = {"embedding": ["U2I", "Q2I", "I2I"], "generative": ["QR", "AVE", "SA", "PM"]}
RATES = {"U2I": 0.08, "Q2I": 0.01, "I2I": 0.0, "QR": 0.05, "AVE": 0.02, "SA": -0.01, "PM": 0.002}
WINDOW, TAU = 6, 10.0


def make_spec(world_size, total_steps=30):
    kinds = {"embedding": KindSpec(TASKS["embedding"], 64), "generative": KindSpec(TASKS["generative"], 32)}
    return ScheduleSpec(kinds, total_steps, world_size, 1, SchedConfig(window=WINDOW, temperature=TAU, warmup_ratio=0,
                                                                           preset="paper"))


def samples(step, world_size):
    """Per task: one validation loss per sample, split across the ranks; and the exact global means."""
    rng = np.random.default_rng(step)
    per_task = {task: (1 + math.exp(-rate * step)) * rng.uniform(0.8, 1.2, 5 * world_size + 1)
                for task, rate in RATES.items()}
    shares = [({t: math.fsum(np.array_split(v, world_size)[r]) for t, v in per_task.items()},
               {t: len(np.array_split(v, world_size)[r]) for t, v in per_task.items()}) for r in range(world_size)]
    return shares, {task: math.fsum(v) / len(v) for task, v in per_task.items()}


def report_all(client, step, world_size, rng):
    shares, means = samples(step, world_size)
    for rank in rng.permutation(world_size):
        client.report(step, int(rank), *shares[rank])
    return means


@pytest.fixture
def actors(ray_cluster):
    """Start schedulers by run name; kill them all at the end of the test."""
    started = []

    def start(run_name, spec, **kwargs):
        client = start_scheduler(run_name, spec, **kwargs)
        started.append(client.handle)
        return client

    yield start
    for handle in started:
        ray_cluster.kill(handle)


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_in_any_order_give_the_pure_ratios_of_the_global_means(actors, ray_cluster, world_size):
    client = actors(f"ranks-{world_size}", make_spec(world_size))
    rng = np.random.default_rng(world_size)
    means = []
    for step in range(1, 16):
        waiting = client.handle.counts.remote(step + 1, 30.0)  # asked before the point is in: waits
        means.append(report_all(client, step, world_size, rng))
        result = ray_cluster.get(waiting)
        assert result["step"] == step + 1 and result["based_on_step"] == step
        for kind, tasks in TASKS.items():
            expected = s2sched_ratios([[row[t] for t in tasks] for row in means], WINDOW, TAU)
            np.testing.assert_allclose([result["ratios"][kind][t] for t in tasks], expected, rtol=0, atol=1e-12)
            assert sum(result["counts"][kind].values()) == (64 if kind == "embedding" else 32)
    # every rank gets the same counts for a step, also through a client found by name
    other = SchedulerClient.connect(f"ranks-{world_size}")
    assert other.counts(9) == client.counts(9)


def test_save_kill_restore_continues_with_identical_ratios(actors, ray_cluster):
    spec = make_spec(2)
    rng = np.random.default_rng(0)
    reference = actors("uninterrupted", spec)
    first = actors("restarted", spec)
    for step in range(1, 11):
        report_all(reference, step, 2, rng)
        report_all(first, step, 2, rng)
    saved = json.dumps(first.state())  # what a checkpoint would hold
    ray_cluster.kill(first.handle)
    second = actors("restarted-2", spec, state=json.loads(saved))
    for step in range(11, 21):
        report_all(reference, step, 2, rng)
        report_all(second, step, 2, rng)
        assert second.counts(step + 1) == reference.counts(step + 1)
    assert second.history() == reference.history()


def test_early_ask_times_out_with_a_clear_error(actors):
    client = actors("early", make_spec(2))
    shares, _ = samples(1, 2)
    client.report(1, 1, *shares[1])
    with pytest.raises(TimeoutError, match=r"no counts after 0.3 s: the counts of step 2 need the validation point "
                                           r"of step 1.*ranks \[0\] of 2 have not reported"):
        client.counts(2, timeout_s=0.3)
    client.report(1, 0, *shares[0])
    assert client.counts(2, timeout_s=5)["based_on_step"] == 1


def test_duplicate_report_and_mismatched_restore_are_rejected(actors):
    client = actors("duplicate", make_spec(2))
    shares, _ = samples(1, 2)
    client.report(1, 0, *shares[0])
    with pytest.raises(ValueError, match="rank 0 already reported the point of step 1"):
        client.report(1, 0, *shares[0])
    other = actors("other-settings", make_spec(2, total_steps=99))
    with pytest.raises(ValueError, match=r"different settings: \['total_steps'\]"):
        other.restore(client.state())


def test_workers_use_the_client_from_ray_tasks(actors, ray_cluster):
    client = actors("from-tasks", make_spec(2))

    @ray_cluster.remote(num_cpus=0)
    def rank_step(client, step, rank, share):
        client.report(step, rank, *share)
        return client.counts(step + 1, timeout_s=120)  # the other task's worker may start slowly

    shares, _ = samples(1, 2)
    first, second = ray_cluster.get([rank_step.remote(client, 1, rank, shares[rank]) for rank in (1, 0)])
    assert first == second and first["based_on_step"] == 1


def test_a_failed_restore_at_start_leaves_no_actor_behind(actors, ray_cluster):
    saved = actors("source", make_spec(2)).state()
    with pytest.raises(ValueError, match="different settings"):
        start_scheduler("failed-restore", make_spec(2, total_steps=99), state=saved)
    client = actors("failed-restore", make_spec(2))  # the name is free again
    assert client.counts(1, timeout_s=5)["step"] == 1


def test_a_restarted_actor_refuses_work_until_restored_and_then_takes_any_number_of_ranks(actors, ray_cluster):
    """Its process killed, Ray starts the actor again from its spec: it knows it lost its state and fails the
    workers' calls at once (Ray Train then restarts them from a checkpoint) until rank 0 restores a saved
    state, here with 4 ranks reporting where 2 did (an elastic run resumed on more workers)."""
    import os
    import signal
    import time

    rng = np.random.default_rng(1)
    reference, client = actors("never-killed", make_spec(2)), actors("killed", make_spec(2))
    for step in range(1, 6):
        report_all(client, step, 2, rng)
        report_all(reference, step, 2, rng)
    saved = client.state()
    reference.restore(reference.state(), world_size=4)  # the same change of ranks, without a kill
    pid = ray_cluster.get(client.handle.__ray_call__.remote(lambda actor: os.getpid()))
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 180  # a new actor process: slow to start on a busy machine
    while True:  # calls fail while it restarts, then with the lost-state error
        try:
            ray_cluster.get(client.handle.counts.remote(6, 1.0), timeout=5)
        except Exception as error:  # noqa: BLE001 - RayActorError while restarting, GetTimeoutError
            if "lost its state" in str(error):
                break
        assert time.monotonic() < deadline, "the actor did not come back within 180 s"
        time.sleep(0.2)
    for call in (lambda: client.report(6, 0, *samples(6, 2)[0][0]), client.state, client.history):
        with pytest.raises(Exception, match="lost its state"):  # a checkpoint must not save an empty state
            call()
    client.restore(saved, world_size=4)
    with pytest.raises(ValueError, match=r"rank must be an integer \[0, 3\], got 4"):
        client.report(6, 4, *samples(6, 4)[0][0])
    assert client.counts(6)["counts"] != {}
    for step in range(6, 9):
        shares, _ = samples(step, 4)
        for rank in range(3):
            client.report(step, rank, *shares[rank])
        with pytest.raises(TimeoutError, match=r"ranks \[3\] of 4 have not reported"):
            client.counts(step + 1, timeout_s=0.2)
        client.report(step, 3, *shares[3])
        report_all(reference, step, 4, rng)
        assert client.counts(step + 1) == reference.counts(step + 1)
    assert client.history() == reference.history()
