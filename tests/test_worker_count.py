"""What a step trains on and what S2Sched publishes do not depend on the number of training workers. The
uninterrupted baseline run (2 workers, test_train_job's settings) is the reference. The same run with
elastic workers (`train.num_workers: [1, 4]`, of which the 2-CPU cluster holds 4 at half a CPU each) is
stopped after its first checkpoint and resumed with `train.num_workers=1`: the steps trained on 4 workers
and the rest on 1 train on the baseline's records at every step (each rank's `record_trace`, all ranks
together), S2Sched publishes the baseline's ratios (to float rounding: the ranks' sums group differently),
and the run ends with the baseline's losses: the optimizer state written by 4 ranks went on in 1
(`optimizer.safetensors`)."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from pathlib import Path

import mlflow
import numpy as np
import pytest

from recfound.config import load_config
from recfound.run_layout import RunLayout
from recfound.train.resume import latest_registered_checkpoint
from test_train_job import STEPS, _wait_for_checkpoints, job_overrides, set_arguments, start_recfound


def records_by_step(run_dir: Path) -> tuple[dict[int, dict[str, list[int]]], set[int]]:
    """step -> task -> the pool rows every rank together trained on (a step written twice, by a run and its
    resumed run, counts once: the later write), and the ranks that wrote."""
    per_rank: dict[tuple[int, int], dict[str, list[int]]] = {}  # (step, rank) -> rows, the later write kept
    for path in sorted((run_dir / "record_trace").glob("rank*.jsonl"), key=lambda p: p.stat().st_mtime):
        rank = int(path.name[len("rank"):].split("-")[0])
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            per_rank[entry["step"], rank] = entry["rows"]
    steps: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for (step, _), rows in per_rank.items():
        for task, indices in rows.items():
            steps[step][task].update(indices)
    ranks = {rank for _, rank in per_rank}
    return {step: {task: sorted(rows) for task, rows in tasks.items()} for step, tasks in steps.items()}, ranks


@pytest.mark.timeout(600)  # the baseline (fixture, when it runs first), then two worker-group starts
def test_a_run_on_four_then_one_worker_trains_on_the_records_and_ratios_of_a_run_on_two(baseline):
    from recfound.job import run_training

    tmp, reference = baseline
    arguments = job_overrides(tmp, "resized", "train.num_workers=[1, 4]", "train.cpus_per_worker=0.5",
                              "eval.enabled=false", "mlflow.register_as=null")
    console = tmp / "resized-console.txt"
    driver = start_recfound(console, "train", *set_arguments(arguments))
    try:
        _wait_for_checkpoints(str(tmp / "runs" / "resized"), 1, driver)
        driver.send_signal(signal.SIGTERM)  # as `ray job stop`; the run is resubmitted on fewer workers
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    printed = console.read_text()
    assert driver.returncode == 128 + signal.SIGTERM, printed[-3000:]
    assert f"== training {STEPS} steps on 1-4 (elastic) CPU worker(s)" in printed
    stopped_at, _ = latest_registered_checkpoint(RunLayout(str(tmp / "runs" / "resized")))
    assert stopped_at < STEPS
    resumed_at = time.time()
    resized = run_training(load_config(None, [*arguments, "train.num_workers=1"]))

    trace, ranks = records_by_step(resized.run_dir)
    expected, reference_ranks = records_by_step(reference.run_dir)
    assert (ranks, reference_ranks) == ({0, 1, 2, 3}, {0, 1})  # the elastic run started 4 workers
    after = sorted(path.name for path in (resized.run_dir / "record_trace").iterdir()
                   if path.stat().st_mtime >= resumed_at)
    assert after == [f"rank0-{s:06d}-{s + 1:06d}.jsonl" for s in range(stopped_at + 1, STEPS, 2)], after  # 1 worker
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert all(sum(len(rows) for rows in expected[step].values()) == 16 + 16 for step in expected)
    assert trace == expected
    history, wanted = resized.history, reference.history
    assert history["eval_steps"] == wanted["eval_steps"] == list(range(1, STEPS + 1))
    for kind in ("embedding", "generative"):
        assert history["kinds"][kind]["steps"] == wanted["kinds"][kind]["steps"]
        np.testing.assert_allclose(history["kinds"][kind]["ratios"], wanted["kinds"][kind]["ratios"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(history["kinds"][kind]["losses"], wanted["kinds"][kind]["losses"], rtol=1e-4)
        moved = np.asarray(wanted["kinds"][kind]["ratios"])
        assert np.abs(moved[-1] - moved[0]).max() > 1e-3, moved  # the ratios moved: the comparison compares something
    client = mlflow.MlflowClient(resized.tracking_uri)
    assert [m.value for m in client.get_metric_history(resized.run_id, "resumed_from_step")] == [float(stopped_at)]
    final, expected_final = (client.get_run(run.run_id).data.metrics for run in (resized, reference))
    for key in ("loss/total", "loss/embedding", "loss/generative"):
        assert final[key] == pytest.approx(expected_final[key], rel=1e-4), key
