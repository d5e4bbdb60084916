"""A training job across several Ray nodes that loses one: a head and two worker nodes, each a `ray start`
process of its own (own temp folder, ports and process group) as separate machines run them, nothing of
the run on a shared disk (data, run folder, checkpoints and MLflow artifacts in the session's S3 bucket;
the MLflow store is a SQLite file beside the head, as the head's MLflow server keeps it). The job, with
the settings of the uninterrupted baseline run (test_train_job), is submitted with the real `ray job
submit`; each worker node advertises one unit of a custom resource the job asks for per worker, so its
two workers run on the two worker nodes. After the first checkpoint one worker node is killed (its
process group, by PID, as a machine that disappears); a replacement node is started; Ray Train restarts
the workers from the checkpoint in the bucket and the run ends at the same step with the baseline's
exact ratio sequence."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cloud_services import multi_node_cluster, wait_until
from test_train_job import STEPS, _registered_checkpoints, job_overrides, set_arguments

REPO = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
SLOT = "rf_train_slot"  # one unit per worker node: one training worker on each
NODE = {"CPU": 1, SLOT: 1}


def train_workers_on(node: subprocess.Popen) -> int:
    """The Ray Train workers running under a node's `ray start` process (processes come and go meanwhile)."""
    count = 0
    for child in psutil.Process(node.pid).children(recursive=True):
        try:
            count += "RayTrainWorker" in " ".join(child.cmdline())
        except psutil.Error:
            pass
    return count


@pytest.mark.timeout(900)  # the baseline (fixture, when it runs first: 56 s idle), three node starts, the job
def test_a_job_on_three_nodes_loses_a_worker_node_and_finishes_on_the_same_ratio_sequence(baseline, object_store,
                                                                                          tmp_path):
    from recfound import storage

    tmp, uninterrupted = baseline
    root = f"{object_store}/multinode"
    storage.upload(tmp / "data", f"{root}/data")  # the baseline's corpus
    run_dir = f"{root}/runs/multinode"
    overrides = job_overrides(tmp, "multinode", f"train.worker_resource={SLOT}", "checkpoint.max_failures=2",
                              "eval.enabled=false", "mlflow.register_as=null", f"run.output_dir={root}/runs",
                              f"data.root={root}/data", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                              f"mlflow.artifact_root={root}/mlartifacts")
    job_id = "multinode"
    with multi_node_cluster(tmp_path / "cluster", {"CPU": 1}, {}) as cluster:
        cluster.add_nodes({"node-1": NODE, "node-2": NODE})
        command = [str(BIN_DIR / "ray"), "job", "submit", "--address", cluster.head.dashboard, "--submission-id",
                   job_id, "--", sys.executable, str(REPO / "jobs" / "train.py"), *set_arguments(overrides)]
        with (tmp_path / "submit.log").open("w") as out:
            job = subprocess.Popen(command, env=cluster.head.client_env(), stdout=out, stderr=subprocess.STDOUT)
            try:
                def first_checkpoint() -> bool:
                    assert job.poll() is None, (tmp_path / "submit.log").read_text()[-3000:]
                    return _registered_checkpoints(run_dir) >= 1

                wait_until(first_checkpoint, 420, "the job's first checkpoint", interval_s=0.2)
                placed = {name: train_workers_on(node) for name, node in cluster.nodes.items()}
                cluster.kill_node("node-1")
                killed_at = time.monotonic()
                cluster.add_nodes({"node-3": NODE})  # the replacement machine
                wait_until(lambda: job.poll() is not None or train_workers_on(cluster.nodes["node-3"]),
                           300, "a training worker on the replacement node")
                replaced = train_workers_on(cluster.nodes["node-3"])
                job.wait(timeout=420)
            finally:
                if job.poll() is None:
                    job.kill()
        console = cluster.head.api(f"/api/jobs/{job_id}/logs")["logs"]
        alive = [node for node in cluster.head.nodes() if node["state"] == "ALIVE"]
    assert job.returncode == 0, console[-4000:]
    assert placed == {"node-1": 1, "node-2": 1}, placed  # one worker per worker node, none on the head
    assert replaced == 1  # the replacement node took the lost node's worker
    assert len(alive) == 3 and time.monotonic() - killed_at < 420
    assert "resumed from the checkpoint of step" in console and f"train step {STEPS}/{STEPS}" in console, console[-3000:]
    history = json.loads(storage.read_text(f"{run_dir}/scheduler_history.json"))
    assert history["eval_steps"] == uninterrupted.history["eval_steps"] == list(range(1, STEPS + 1))
    for kind in ("embedding", "generative"):
        assert history["kinds"][kind]["ratios"] == uninterrupted.history["kinds"][kind]["ratios"]
        np.testing.assert_allclose(history["kinds"][kind]["losses"], uninterrupted.history["kinds"][kind]["losses"],
                                   rtol=1e-6)
    assert {"checkpoint_000006", "checkpoint_000008", "merged.safetensors", "summary.txt"} <= \
        set(storage.list_names(run_dir))
