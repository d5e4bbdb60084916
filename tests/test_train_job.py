"""The training job end to end on the session's local Ray cluster with 2 CPU workers (DeepSpeed ZeRO-2
over gloo): MLflow run, metrics, merge, registry; and a worker killed mid-run resumes from the last
checkpoint onto the same step count and ratio sequence as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import mlflow
import numpy as np
import pytest
import torch

from recfound.config import load_config
from recfound.sched import allocate
from recfound.tasks import get_task, task_names

STEPS = 8


def job_config(tmp_path, name: str, *extra: str):
    return load_config(None, [f"run.name={name}", f"run.output_dir={tmp_path / 'runs'}",
                              f"data.root={tmp_path / 'data'}", f"train.steps={STEPS}", "checkpoint.every=2",
                              "data.val_per_task=8", "sched.warmup_ratio=0.25", "sched.window=4", "sched.eval_interval=1",
                              "eval.max_records=8", "eval.max_new_tokens=16", *extra])


@pytest.fixture(scope="module")
def baseline(ray_cluster, tmp_path_factory):
    from recfound.train.launch import run_training

    tmp = tmp_path_factory.mktemp("job")
    return tmp, run_training(job_config(tmp, "baseline"))


def metric_series(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value (the last logged one: a resumed run logs its re-run steps again)."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp)}


def test_short_run_is_tracked_merged_and_registered(baseline):
    tmp, report = baseline
    client = mlflow.MlflowClient(report.tracking_uri)
    run = client.get_run(report.run_id)
    assert run.info.status == "FINISHED" and run.data.params["sched.window"] == "4"
    for task in task_names():
        for prefix in ("train_loss", "val_loss", "ratio", "records"):
            assert sorted(metric_series(client, report.run_id, f"{prefix}/{task}")) == list(range(1, STEPS + 1))
    # The records all ranks trained on each step sum to the counts the scheduler published.
    config = job_config(tmp, "baseline")
    for kind in ("embedding", "generative"):
        tasks = task_names(kind)
        batch = getattr(config.train, f"{kind}_batch")
        for step in range(1, STEPS + 1):
            ratios = np.array([metric_series(client, report.run_id, f"ratio/{t}")[step] for t in tasks])
            used = [metric_series(client, report.run_id, f"records/{t}")[step] for t in tasks]
            assert used == allocate(batch, ratios).tolist()
    # Validation loss fell on every task.
    for task in task_names():
        assert report.last_val_loss[task] < report.first_val_loss[task], task
    assert report.merged_adapter.is_file() and (report.run_dir / "ratios.png").is_file()
    artifacts = {a.path for a in client.list_artifacts(report.run_id)}
    assert {"config.yaml", "ratios.png", "routing.png", "summary.txt", "adapter"} <= artifacts


def test_registered_model_reproduces_the_merged_adapter(baseline):
    from recfound.data.collate import pad
    from recfound.data.streams import records_table
    from recfound.data.tokenize import TokenLimits, tokenize_batch
    from recfound.data.tokenizer import load_tokenizer
    from recfound.model.adapter import AdapterConfig, attach_adapter
    from recfound.model.backbone import load_backbone
    from recfound.model.objectives import embed
    from recfound.model.state import load_adapter, read_adapter
    from recfound.tracking import load_registered_adapter

    tmp, report = baseline
    version = mlflow.MlflowClient(report.tracking_uri).get_model_version(report.registered.name,
                                                                        report.registered.version)
    assert version.tags["run_id"] == report.run_id and version.tags["base_model"] == "tiny"
    served = load_registered_adapter(report.tracking_uri, report.registered.name, report.registered.version)
    records = [{"task": "Q2I", "instruction": "Find the product.", "query": query, "positive": "unused",
                "negatives": []} for query in ("red running shoes", "a lamp for the desk")]
    predicted = np.asarray(served.predict(records)["embedding"].tolist())
    # By hand: the merged adapter file on the same seeded base, the training tokenization, mean pooling.
    header, _ = read_adapter(report.merged_adapter)
    tokenizer_dir = report.run_dir / "tokenizer"
    _, info = load_tokenizer(tokenizer_dir)
    adapter = attach_adapter(load_backbone("tiny", info, seed=0), AdapterConfig(**header["config"]),
                             token_ids=header["token_ids"])
    load_adapter(adapter, report.merged_adapter)
    adapter.eval()
    tokens = tokenize_batch(records_table(records, get_task("Q2I")), str(tokenizer_dir), "embedding", TokenLimits())
    ids, mask = (torch.from_numpy(a) for a in pad(tokens.column("query_ids").to_pylist(), info.pad_id))
    adapter.set_tasks([adapter.task_id("Q2I")] * len(records))
    with torch.no_grad():
        expected = embed(adapter.model, ids, mask).numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_evaluation_after_training_is_logged_and_the_registered_model_scores_the_same(baseline):
    """The run evaluated the base and the merged adapter on the test split and logged both; the
    registered version, evaluated on its own, reproduces the run's scores."""
    from recfound.eval.data import load_split
    from recfound.eval.job import make_scorer
    from recfound.eval.report import read_logged_evaluations
    from recfound.eval.runner import evaluate_model
    from recfound.eval.source import ModelSource

    tmp, report = baseline
    assert set(report.evaluations) == {"test_base", "test"}
    assert set(report.test_scores) == set(task_names()) and set(report.test_averages) == {"embedding", "generative"}
    metrics = mlflow.MlflowClient(report.tracking_uri).get_run(report.run_id).data.metrics
    for task in task_names():
        assert metrics[f"test/{task}"] == pytest.approx(report.test_scores[task])
        assert f"test_base/{task}" in metrics
    assert metrics["test/generative_avg"] == pytest.approx(report.test_averages["generative"])
    logged = read_logged_evaluations(report.tracking_uri, report.run_id)
    assert {role: e.to_dict()["generative"] for role, e in logged.items()} == \
        {role: e.to_dict()["generative"] for role, e in report.evaluations.items()}
    summary = (report.run_dir / "summary.txt").read_text()
    assert "trained model better than the base on" in summary and "bertscore_f1" in summary
    config = job_config(tmp, "baseline")
    source = ModelSource.from_registered(report.tracking_uri, report.registered.name, report.registered.version)
    data = load_split(config.data.root, "test", max_records=config.eval.max_records)
    again = evaluate_model(source, data, config.eval, make_scorer(config.eval.scorer), seed=config.run.seed)
    assert again.answers == report.evaluations["test"].answers
    for task, score in report.evaluations["test"].headline().items():
        assert again.headline()[task].value == pytest.approx(score.value, abs=1e-6), task


def _train_worker_pids(since: float) -> list[int]:
    """Ray Train worker processes started after `since`: this run's, not an earlier test's that is still
    shutting down (the sweep tests' stopped trials, say)."""
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline", "create_time"])
            if any("RayTrainWorker" in part for part in (p.info["cmdline"] or [])) and p.info["create_time"] >= since]


def _registered_checkpoints(run_dir) -> int:
    """Checkpoints Ray Train's controller has registered (its snapshot, written after each registration);
    a checkpoint folder on disk may not be registered yet, and a restart then begins from scratch."""
    try:
        return len(json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["checkpoint_results"])
    except (OSError, ValueError, KeyError):
        return 0


def _kill_one_worker_after_first_checkpoint(run_dir, stop: threading.Event, killed: list) -> None:
    since = time.time()
    while not stop.is_set() and _registered_checkpoints(run_dir) < 1:
        time.sleep(0.1)
    pids = _train_worker_pids(since)
    if pids and not stop.is_set():
        os.kill(pids[-1], signal.SIGKILL)
        killed.append(pids[-1])


def test_killed_worker_resumes_onto_the_same_ratio_sequence(baseline):
    from recfound.train.launch import run_training

    tmp, uninterrupted = baseline
    config = job_config(tmp, "killed", "checkpoint.max_failures=2", "eval.enabled=false")
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_worker_after_first_checkpoint, args=(config.run_dir(), stop, killed))
    killer.start()
    try:
        resumed = run_training(config)
    finally:
        stop.set()
        killer.join()
    assert killed, "no training worker was found to kill"
    client = mlflow.MlflowClient(resumed.tracking_uri)
    logged = [m.step for m in client.get_metric_history(resumed.run_id, "loss/total")]
    assert sorted(set(logged)) == list(range(1, STEPS + 1))
    resumed_from = [m.value for m in client.get_metric_history(resumed.run_id, "resumed_from_step")]
    assert resumed_from and resumed_from[0] >= 2  # from a checkpoint, not from the start
    assert resumed.history["eval_steps"] == uninterrupted.history["eval_steps"] == list(range(1, STEPS + 1))
    for kind in ("embedding", "generative"):
        assert resumed.history["kinds"][kind]["ratios"] == uninterrupted.history["kinds"][kind]["ratios"]
        np.testing.assert_allclose(resumed.history["kinds"][kind]["losses"],
                                   uninterrupted.history["kinds"][kind]["losses"], rtol=1e-6)


def test_diverging_run_stops_after_too_many_non_finite_steps(ray_cluster, tmp_path):
    """A learning rate of 1e30 blows the adapter up after the first update; every later step's loss is
    NaN, ZeRO skips those updates, and after train.max_bad_steps in a row the run stops (without the
    restart a worker error would cost) with a clear error, keeping the checkpoints it wrote (which
    never saw a NaN update)."""
    from recfound.model.state import read_adapter
    from recfound.train.launch import TrainingError, find_checkpoint_folders, run_training

    config = job_config(tmp_path, "diverging", "train.lr=1e30", "train.lr_warmup_ratio=0", "train.max_bad_steps=2",
                        "checkpoint.every=1")
    with pytest.raises(TrainingError, match=r"stopped: 2 steps in a row up to step 3 had a non-finite loss"):
        run_training(config)
    kept = find_checkpoint_folders(config.run_dir())
    assert kept
    _, tensors = read_adapter(kept[-1] / "adapter.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())
    run = mlflow.MlflowClient(config.tracking_uri()).search_runs(
        [mlflow.MlflowClient(config.tracking_uri()).get_experiment_by_name("recfound").experiment_id],
        filter_string="attributes.run_name = 'diverging'")[0]
    assert run.info.status == "FAILED"


def test_zero3_run_saves_whole_adapters_that_reload(ray_cluster, tmp_path):
    """Under ZeRO-3 the adapter is partitioned over the ranks: the initial, checkpointed and merged
    adapter files must still hold every tensor whole, and they load into a fresh adapter."""
    from recfound.data.tokenizer import load_tokenizer
    from recfound.merge.files import INIT_FILE
    from recfound.model.adapter import AdapterConfig, attach_adapter
    from recfound.model.backbone import load_backbone
    from recfound.model.state import load_adapter, read_adapter
    from recfound.train.launch import run_training

    config = job_config(tmp_path, "zero3", "train.zero_stage=3", "train.steps=2", "checkpoint.every=1", "eval.enabled=false",
                        "sched.window=2")
    report = run_training(config)
    header, _ = read_adapter(report.merged_adapter)
    _, info = load_tokenizer(report.run_dir / "tokenizer")
    fresh = attach_adapter(load_backbone("tiny", info, seed=0), AdapterConfig(**header["config"]),
                           token_ids=header["token_ids"])
    expected = {name: tuple(p.shape) for name, p in fresh.trainable_state().items()}
    for path in (report.run_dir / INIT_FILE, report.final_adapter, report.merged_adapter):
        _, tensors = read_adapter(path)
        assert {name: tuple(t.shape) for name, t in tensors.items()} == expected, path.name
        load_adapter(fresh, path)
