"""One training job across several Ray nodes that loses its S2Sched actor and a whole node, then its driver, and
changes its number of workers on the way (2, then 1, then 1 again), and still trains exactly like the uninterrupted
baseline run on 2 workers (test_train_job's settings): the same records at every step, the same ratio sequence,
the same losses.

A head and two worker nodes, each a `ray start` process of its own (own temp folder, ports and process group) as
separate machines run them; nothing of the run on a shared disk (data, run folder, checkpoints and MLflow
artifacts in the session's S3 bucket; the MLflow store is a SQLite file beside the head, as the head's MLflow
server keeps it). Each worker node advertises one unit of a custom resource the job asks for per worker, so
the elastic job (`train.num_workers: [1, 2]`) runs one worker on each worker node. The job is submitted with
the real `ray job submit`; after its first checkpoint the scheduler actor's process is killed (`kill` of
`ray::SchedulerActor`, as a user would) and, at the same moment, a worker node (its process group, by PID, as a
machine that disappears): Ray Train goes on with the 1 worker the cluster still holds, rank 0 restoring the
restarted actor from the checkpoint. After the next checkpoint, `ray job stop`; the driver's local staging folder
is deleted and the job is submitted again on 1 worker: it resumes from the checkpoint in the bucket and
finishes.

Both events land at the checkpoint the test saw: the training workers are paused (SIGSTOP) first, as a job
stuck in a collective would be. Without that, a busy machine let the run train on while the `ray` commands
started, and once it trained to the end before `ray job stop` landed (nothing left for the 1-worker job)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest

from cloud_services import multi_node_cluster, wait_until
from test_train_job import STEPS, job_overrides, set_arguments

REPO = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
SLOT = "rf_train_slot"  # one unit per worker node: one training worker on each
NODE = {"CPU": 1, SLOT: 1}
WAIT_S = 420  # for each event of the run; the whole test is bounded by its timeout mark


def processes_on(node: subprocess.Popen, title: str) -> list[psutil.Process]:
    """The processes under a node's `ray start` process whose title names `title` (e.g. an actor class)."""
    found = []
    for child in psutil.Process(node.pid).children(recursive=True):
        try:
            if title in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def pause_training_workers(cluster) -> list[psutil.Process]:
    """SIGSTOP every training worker of the cluster's nodes: the run stays at the checkpoint it registered.
    Whatever stops them next (Ray Train's shutdown after a failure, `ray job stop`) kills them."""
    workers = [worker for node in cluster.nodes.values() for worker in processes_on(node, "RayTrainWorker")]
    for worker in workers:
        worker.suspend()
    return workers


def records_by_step(read_text, names: list[str]) -> tuple[dict[int, dict[str, list[int]]], set[int]]:
    """step -> task -> the pool rows all ranks together trained on (`train.trace_records`), and the ranks that
    wrote. A step trained twice (before and after a restart) is the union of both: every rank draws a part of
    the same global set of rows whatever the number of workers, so any other rows would show up here."""
    steps: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    ranks = set()
    for name in names:
        ranks.add(int(name[len("rank"):].split("-")[0]))
        for line in read_text(name).splitlines():
            entry = json.loads(line)
            for task, rows in entry["rows"].items():
                steps[entry["step"]][task].update(rows)
    return {step: {task: sorted(rows) for task, rows in tasks.items()} for step, tasks in steps.items()}, ranks


def resumes(console: str) -> list[tuple[int, int]]:
    """(step, workers) of each "resumed from the checkpoint" line the workers printed."""
    found = re.findall(r"resumed from the checkpoint of step (\d+) on (\d+) worker", console)
    return [(int(step), int(workers)) for step, workers in found]


@pytest.mark.timeout(900)  # the baseline (fixture, when it runs first), three node starts, four worker-group starts
def test_a_job_on_three_nodes_loses_its_scheduler_actor_a_node_and_its_driver_and_trains_like_the_baseline(
        baseline, object_store, tmp_path, monkeypatch):
    from recfound import storage
    from recfound.config import load_config
    from recfound.data.tokenizer import default_cache_dir
    from recfound.job import run_training
    from recfound.run_folder import staging_folder
    from recfound.model.state import INIT_KEY, read_adapter
    from recfound.run_layout import RECORD_TRACE_DIR, RunLayout
    from recfound.train.resume import latest_registered_checkpoint

    tmp, reference = baseline
    root = f"{object_store}/multinode"
    storage.upload(tmp / "data", f"{root}/data")  # the baseline's corpus
    run_dir = f"{root}/runs/multinode"
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = job_overrides(tmp, "multinode", "train.num_workers=[1, 2]", "train.cpus_per_worker=0.5",
                              f"train.worker_resource={SLOT}", "checkpoint.max_failures=4", "eval.enabled=false",
                              # The placement group Ray Train asks for right after the node loss may still count
                              # the lost node's resources until the head declares it dead: that attempt fails after
                              # 30 / 3 s (not 120 / 3), the next one starts the 1 worker.
                              "train.placement_timeout_s=30",
                              f"run.output_dir={root}/runs", f"data.root={root}/data",
                              f"mlflow.tracking_uri={tracking_uri}", f"mlflow.artifact_root={root}/mlartifacts")
    cache = tmp_path / "cache"  # the nodes' RECFOUND_CACHE (and this process's): the driver's staging folder
    # The backbone pre-trained on this corpus for the baseline (the same key): built once per suite.
    shutil.copytree(default_cache_dir() / "backbones", cache / "backbones")
    monkeypatch.setenv("RECFOUND_CACHE", str(cache))
    environment = {"RECFOUND_CACHE": str(cache), "RAY_JOB_STOP_WAIT_TIME_S": "60"}  # `ray job stop`: a clean stop
    layout = RunLayout(run_dir)

    def latest_step() -> int:
        found = latest_registered_checkpoint(layout)
        return found[0] if found else 0

    with multi_node_cluster(tmp_path / "cluster", {"CPU": 1}, environment) as cluster:
        cluster.add_nodes({"node-1": NODE, "node-2": NODE})
        ray = [str(BIN_DIR / "ray"), "job"]
        address = ["--address", cluster.head.dashboard]

        def submit(job_id: str, *extra: str) -> subprocess.Popen:
            command = [*ray, "submit", *address, "--submission-id", job_id, "--", sys.executable,
                       str(REPO / "jobs" / "train.py"), *set_arguments([*overrides, *extra])]
            with (tmp_path / f"{job_id}.log").open("w") as out:
                return subprocess.Popen(command, env=cluster.head.client_env(), stdout=out, stderr=subprocess.STDOUT)

        def printed(job_id: str) -> str:
            return (tmp_path / f"{job_id}.log").read_text()  # `ray job submit` follows the job's console

        def checkpointed_after_resume(workers: int) -> bool:
            """The workers resumed on `workers` workers and registered a checkpoint after that."""
            found = [step for step, count in resumes(printed("multinode")) if count == workers]
            return bool(found) and latest_step() > found[-1]

        def wait_for(job: subprocess.Popen, condition, what: str) -> None:
            def met() -> bool:
                assert job.poll() is None, (tmp_path / "multinode.log").read_text()[-3000:]
                return condition()

            wait_until(met, WAIT_S, what, interval_s=0.2)

        job = submit("multinode")
        try:
            wait_for(job, lambda: latest_step() >= 2, "the job's first checkpoint")
            placed = {name: len(processes_on(node, "RayTrainWorker")) for name, node in cluster.nodes.items()}
            (actor,) = processes_on(cluster.head.process, "ray::SchedulerActor")
            paused = pause_training_workers(cluster)
            actor.kill()  # the scheduler actor's process and, at the same moment, a worker node
            cluster.kill_node("node-1")
            wait_for(job, lambda: checkpointed_after_resume(1), "a checkpoint on the 1 worker left after the losses")
            paused += pause_training_workers(cluster)
            stopped = subprocess.run([*ray, "stop", *address, "multinode"], env=cluster.head.client_env(),
                                     capture_output=True, text=True, timeout=120)
            job.wait(timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
        first_console = cluster.head.api("/api/jobs/multinode/logs")["logs"]
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert cluster.head.api("/api/jobs/multinode")["status"] == "STOPPED"
        assert [line for line in first_console.splitlines() if line.strip()][-1].startswith(
            f"recfound: training run 'multinode' stopped by SIGTERM; checkpoints kept in {run_dir}: checkpoint_0000"), \
            first_console[-3000:]
        stopped_at = latest_step()
        client = mlflow.MlflowClient(tracking_uri)
        (run,) = client.search_runs([client.get_experiment_by_name("recfound").experiment_id],
                                    filter_string="attributes.run_name = 'multinode'")
        assert run.info.status == "KILLED"
        shutil.rmtree(staging_folder(run_dir, "multinode"))  # the run's checkpoints and tokenizer: only in the bucket

        with pytest.raises(FileExistsError, match=r"other settings \(train\.lr: 0\.005 -> 0\.001\); rerun with its"):
            run_training(load_config(None, [*overrides, "train.lr=0.001"]))
        again = submit("multinode-again", "train.num_workers=1")
        try:
            again.wait(timeout=WAIT_S)
        finally:
            if again.poll() is None:
                again.kill()
        second_console = cluster.head.api("/api/jobs/multinode-again/logs")["logs"]
        alive = [node for node in cluster.head.nodes() if node["state"] == "ALIVE"]
    assert again.returncode == 0, second_console[-4000:]
    assert placed == {"node-1": 1, "node-2": 1}, placed  # one worker per worker node, none on the head
    assert len(paused) == 2 + 1, paused  # both events found the workers to pause
    assert len(alive) == 2  # the head and node-2
    assert f"== training {STEPS} steps on 1-2 (elastic) CPU worker(s)" in first_console
    # The workers restarted from the checkpoint before the losses, on the 1 worker the cluster then held.
    ((after_losses, workers),) = resumes(first_console)
    assert workers == 1 and 2 <= after_losses < STEPS, first_console[-3000:]
    assert resumes(second_console) == [(stopped_at, 1)] and f"train step {STEPS}/{STEPS}" in second_console

    # Every step trained on the baseline's records: the steps on 2 workers and on 1.
    trace_dir = storage.join(run_dir, RECORD_TRACE_DIR)
    trace, ranks = records_by_step(lambda name: storage.read_text(storage.join(trace_dir, name)),
                                   storage.list_names(trace_dir))
    expected, reference_ranks = records_by_step(lambda name: (reference.run_dir / RECORD_TRACE_DIR / name).read_text(),
                                                sorted(p.name for p in (reference.run_dir / RECORD_TRACE_DIR).iterdir()))
    assert (ranks, reference_ranks) == ({0, 1}, {0, 1})
    assert sorted(expected) == list(range(1, STEPS + 1))
    assert all(sum(len(rows) for rows in expected[step].values()) == 16 + 16 for step in expected)
    assert trace == expected
    # S2Sched published the baseline's ratios (to float rounding: the ranks' sums group differently) and the run
    # ended with its losses: the optimizer state went on from 2 ranks to 1 (optimizer.safetensors).
    history = json.loads(storage.read_text(f"{run_dir}/scheduler_history.json"))
    wanted = reference.history
    assert history["eval_steps"] == wanted["eval_steps"] == list(range(1, STEPS + 1))
    for kind in ("embedding", "generative"):
        assert history["kinds"][kind]["steps"] == wanted["kinds"][kind]["steps"]
        np.testing.assert_allclose(history["kinds"][kind]["ratios"], wanted["kinds"][kind]["ratios"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(history["kinds"][kind]["losses"], wanted["kinds"][kind]["losses"], rtol=1e-4)
        moved = np.asarray(wanted["kinds"][kind]["ratios"])
        assert np.abs(moved[-1] - moved[0]).max() > 1e-3, moved  # the ratios moved: the comparison compares something

    # One MLflow run from start to finish, its files in the bucket; the merge registered from there.
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith(f"{root}/mlartifacts/")
    assert [m.value for m in client.get_metric_history(run.info.run_id, "resumed_from_step")] == \
        [float(after_losses), float(stopped_at)]
    final, expected_final = client.get_run(run.info.run_id).data.metrics, \
        mlflow.MlflowClient(reference.tracking_uri).get_run(reference.run_id).data.metrics
    for key in ("loss/total", "loss/embedding", "loss/generative"):
        assert final[key] == pytest.approx(expected_final[key], rel=1e-4), key
    assert {"checkpoint_000006", "checkpoint_000008", "merged.safetensors", "ratios.png", "summary.txt",
            "adapter_init.safetensors", "config.yaml", "tokenizer"} <= set(storage.list_names(run_dir))
    assert storage.read_bytes(f"{run_dir}/merged.safetensors") == \
        storage.read_bytes(storage.join(run.info.artifact_uri, "adapter/merged", "merged.safetensors"))
    # The checkpoints before and after each restart name the one initial adapter the run started from.
    fingerprints = {read_adapter(checkpoint.adapter, with_tensors=False)[0][INIT_KEY]
                    for checkpoint in RunLayout(run_dir).checkpoints()}
    assert fingerprints == {read_adapter(f"{run_dir}/adapter_init.safetensors", with_tensors=False)[0][INIT_KEY]}
    (version,) = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert version.source.startswith(f"{root}/mlartifacts/") and storage.is_dir(version.source), version.source
    with pytest.raises(FileExistsError, match="run 'multinode' already finished"):
        run_training(load_config(None, overrides))
