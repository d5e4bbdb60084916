"""The cloud path rehearsed on this machine with real parts: a cluster head started as cluster.yaml starts
it (token authentication, dashboard on loopback, the MLflow server's URI in its environment) with an
autoscaler (Ray's fake node provider: every node it adds is a real raylet here) whose worker type
mirrors cluster.yaml's GPU type, advertising a custom resource instead of GPUs; the MLflow tracking
server as the head runs it (`recfound mlflow-server start`) on a private PostgreSQL server, with its
artifacts in an S3-compatible server (moto). One training job submitted with the real `ray job submit`
scales the cluster from 0 worker nodes to the 2 it needs, trains under ZeRO-3 (the adapter partitioned
over the ranks), registers its merged model in that MLflow, and the nodes go again after the idle
timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud_services import (fake_autoscaling_cluster, fake_autoscaling_config, free_port, postgres_server, s3_objects,
                            s3_server, wait_until)
from recfound.tracking.server import stop_server
from test_train_job import NOISE, set_arguments, submit_job

# Every test here may be the one that starts the services (about 20 s idle) or runs the job (about 70 s idle):
# each gets the time both take beside a CPU hog per core, with the inner waits (job 420 s) inside it.
pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
BIN_DIR = Path(sys.executable).parent
WORKER_RESOURCE = "fake_h100"  # what the fake GPU type advertises in place of GPUs
WORKERS = 2
BUCKET, ARTIFACTS_PREFIX = "recfound-mlflow", "artifacts"
MODEL_NAME = "recfound-cloud"
IDLE_TIMEOUT_MINUTES = 0.1


def shipped_gpu_type() -> tuple[str, dict]:
    """cluster.yaml's on-demand GPU worker type, as `ray up` reads it."""
    from recfound.cloud import load_launcher_config

    launcher = load_launcher_config(REPO / "cluster.yaml")
    return "gpu_h100", launcher["available_node_types"]["gpu_h100"]


def fake_gpu_type() -> dict:
    """The shipped GPU type with one training worker's room per node, the custom resource in place of its
    GPUs, and as many nodes as this job needs."""
    _, shipped = shipped_gpu_type()
    assert shipped["resources"]["GPU"] == 8 and shipped["min_workers"] == 0
    return {"min_workers": shipped["min_workers"], "max_workers": WORKERS,
            "resources": {"CPU": 1, WORKER_RESOURCE: 1}}


def job_overrides(runs: Path, data: Path) -> list[str]:
    return ["run.name=cloud", f"run.output_dir={runs}", f"data.root={data}", "data.tasks=[Q2I, SA, QR]",
            "data.val_per_task=4", f"train.num_workers={WORKERS}", f"train.worker_resource={WORKER_RESOURCE}",
            "train.zero_stage=3", "train.steps=2", "checkpoint.every=1", "sched.window=2", "sched.eval_interval=1",
            "eval.base=false", "eval.workers=0", "eval.max_records=2", "eval.max_new_tokens=4",
            "eval.sampled_negatives=1", "eval.scorer=none", f"mlflow.register_as={MODEL_NAME}"]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    """PostgreSQL, S3, the MLflow server on them, and the fake autoscaling cluster, all up; stopped after."""
    folder = tmp_path_factory.mktemp("cloud")
    with postgres_server() as database, s3_server(BUCKET) as s3:
        env_file = folder / "mlflow.env"  # what cluster.yaml copies to the head as ~/.recfound/mlflow.env
        env_file.write_text(f"MLFLOW_BACKEND_STORE_URI={database}\n"
                            f"MLFLOW_ARTIFACTS_DESTINATION=s3://{BUCKET}/{ARTIFACTS_PREFIX}\n")
        port, pid_file = free_port(), folder / "mlflow-server.pid"
        tracking_uri = f"http://127.0.0.1:{port}"
        start = [str(BIN_DIR / "recfound"), "mlflow-server", "start", "--env-file", str(env_file), "--port", str(port),
                 "--log-file", str(folder / "mlflow-server.log"), "--pid-file", str(pid_file)]
        # The server (PostgreSQL migrations first) and the cluster's head start side by side.
        server = subprocess.Popen(start, env={**os.environ, **s3}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        try:
            with fake_autoscaling_cluster(folder / "cluster", {"CPU": 1, "GPU": 0}, "gpu_h100", fake_gpu_type(),
                                          IDLE_TIMEOUT_MINUTES, {"MLFLOW_TRACKING_URI": tracking_uri}) as cluster:
                said, complaint = server.communicate(timeout=180)
                assert server.returncode == 0, said + complaint
                assert said.startswith(f"MLflow tracking server: {tracking_uri} (backend {database}, "
                                       f"artifacts s3://{BUCKET}/{ARTIFACTS_PREFIX})")
                yield {"cluster": cluster, "tracking_uri": tracking_uri, "database": database, "s3": s3,
                       "folder": folder}
        finally:
            server.kill()  # the start command only (the server itself runs in its own session)
            server.wait(timeout=60)
            stop_server(pid_file)


def test_the_fake_cluster_mirrors_cluster_yaml_and_fits_the_job(tmp_path):
    """The rehearsal's launcher config passes Ray's own checks, and the job's config fits it as the
    shipped config fits the paper's job (the same check `recfound cluster check` runs)."""
    from ray.autoscaler._private.util import validate_config

    from recfound.cloud import check_fit
    from recfound.config import load_config

    # Complete as written: Ray's wheel lacks the fake provider's defaults file that prepare_config would merge.
    config = fake_autoscaling_config({"CPU": 1, "GPU": 0}, "gpu_h100", fake_gpu_type(), "127.0.0.1:6379",
                                     IDLE_TIMEOUT_MINUTES)
    validate_config(config)
    job = load_config(None, job_overrides(tmp_path / "runs", tmp_path / "data"), check_paths=False)
    assert check_fit(config, job) == []
    assert check_fit(config, load_config(None, job_overrides(tmp_path, tmp_path) + ["train.worker_resource=other"],
                                         check_paths=False)) == [
        f"available_node_types.gpu_h100.resources.{WORKER_RESOURCE}: advertised, but the training config does not "
        "ask for it (train.worker_resource is 'other')",
        "available_node_types.gpu_h100.resources: no worker type holds one training worker {CPU: 1, other: 1} "
        "(no worker type advertises other, which train.worker_resource asks for)"]


def test_job_submission_without_the_token_is_refused(cloud):
    """The same `ray job submit` that runs below, without the cluster's token: refused before anything runs."""
    cluster = cloud["cluster"]
    command = [str(BIN_DIR / "ray"), "job", "submit", "--address", cluster.dashboard, "--", "python", "-c", "print(1)"]
    environment = cluster.client_env(with_token=False)
    environment["HOME"] = str(cloud["folder"])  # no ~/.ray/auth_token there either
    for client_token in (None, "0" * 64):  # none at all, then a wrong one
        if client_token:
            environment["RAY_AUTH_TOKEN"] = client_token
        refused = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
        said = (refused.stdout + refused.stderr).strip().splitlines()[-1]
        assert refused.returncode != 0 and "authentication" in said.lower() and "token" in said.lower(), said
    with pytest.raises(urllib.error.HTTPError) as error:  # the jobs API itself, without any token
        urllib.request.urlopen(f"{cluster.dashboard}/api/jobs/", timeout=30)
    assert error.value.code == 401
    assert isinstance(cluster.api("/api/jobs/"), list)  # and with it


@pytest.fixture(scope="module")
def submitted(cloud):
    """The training job, submitted with the token as a user does; the cluster's nodes listed after it."""
    cluster, folder = cloud["cluster"], cloud["folder"]
    before = [node for node in cluster.nodes() if node["state"] == "ALIVE"]
    job_id = f"cloud-{os.getpid()}"
    # No --working-dir: the nodes hold the code, as the image gives every cloud node its copy (a working
    # dir would also be unpacked by each fake node into the one session folder they share on this machine,
    # each overwriting the driver's current directory; `--working-dir` runs in test_train_job).
    command = [str(BIN_DIR / "ray"), "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id,
               "--", sys.executable, str(REPO / "jobs" / "train.py"),
               *set_arguments(job_overrides(folder / "runs", folder / "data"))]
    # submitted again while the new cluster's job server has no agent yet (slow to come up on a busy machine)
    done = submit_job(command, cluster.client_env(), timeout_s=420)
    during = cluster.nodes()
    # The job's console (its driver's output) through the jobs API; this process's own Ray token is the
    # suite cluster's, so the call carries this cluster's token itself. A job never taken has none: the
    # test then fails on the submission's own output.
    console = cluster.api(f"/api/jobs/{job_id}/logs")["logs"] if done.returncode == 0 else ""
    return {"done": done, "console": console, "before": before, "during": during, "job_id": job_id}


def test_submitted_job_scales_the_cluster_up_and_finishes_quietly(submitted):
    done, console = submitted["done"], submitted["console"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Before: the head alone. The job needed one worker node per training worker, and got them.
    assert [node["is_head_node"] for node in submitted["before"]] == [True]
    # (At least: a node started well before its twin idles while the group waits, and the autoscaler may
    # replace it after the 6 s idle timeout; a busy machine can start two nodes that far apart.)
    workers = [node for node in submitted["during"] if not node["is_head_node"]]
    assert WORKERS <= len(workers) <= 2 * WORKERS, workers
    assert all(node["resources_total"].get(WORKER_RESOURCE) == 1 for node in workers)
    assert "GPU" not in json.dumps([node["resources_total"] for node in submitted["during"] if node["is_head_node"]])
    # The driver's console: our lines only, the run to its end.
    assert [noise for noise in NOISE if noise in console] == [], console
    assert "train step 2/2" in console and "== summary" in console
    assert f"registered: models:/{MODEL_NAME}/1" in console
    # Nothing of the run is printed after the evaluation is done; the cluster's events may be (the idle
    # nodes go after 6 s here, while the driver is still evaluating).
    lines = console.splitlines()
    evaluated = next(i for i, line in enumerate(lines) if line.startswith("evaluation done in"))
    assert without_cluster_events(lines[evaluated + 1:lines.index("== summary")]) == []


def without_cluster_events(lines: list[str]) -> list[str]:
    """The non-blank lines that are not Ray's reports about the cluster's nodes: the autoscaler's events,
    and the report of a removed node's raylet (the fake provider kills an idle node's processes, and on a
    busy machine its raylet may die before it logs the SIGTERM, which Ray then calls unexpected): a line
    'Raylet is terminated. ...' and the raylet log lines it quotes, each indented by 4 spaces."""
    kept, quoting = [], False
    for line in lines:
        if "Raylet is terminated." in line:
            quoting = True
        elif not (quoting and line.startswith("    ")):
            quoting = False
            if line.strip() and "(autoscaler +" not in line:
                kept.append(line)
    return kept


def test_zero3_adapters_are_saved_whole(cloud, submitted):
    """Under ZeRO-3 the adapter is partitioned over the ranks; the initial, checkpointed and merged adapter
    files still hold every tensor whole and load into a fresh adapter."""
    from recfound.data.tokenizer import load_tokenizer
    from recfound.model.adapter import AdapterConfig
    from recfound.model.attach import attach_adapter
    from recfound.model.backbone import load_backbone
    from recfound.model.state import load_adapter, read_adapter
    from recfound.run_layout import INIT_FILE, RunLayout

    assert submitted["done"].returncode == 0
    run_dir = cloud["folder"] / "runs" / "cloud"
    merged, final = run_dir / "merged.safetensors", Path(RunLayout(run_dir).checkpoints()[-1].adapter)
    header, _ = read_adapter(merged)
    _, info = load_tokenizer(run_dir / "tokenizer")
    fresh = attach_adapter(load_backbone(run_dir / "backbone", info), AdapterConfig(**header["config"]),
                           token_ids=header["token_ids"])
    expected = {name: tuple(p.shape) for name, p in fresh.trainable_state().items()}
    for path in (run_dir / INIT_FILE, final, merged):
        _, tensors = read_adapter(path)
        assert {name: tuple(t.shape) for name, t in tensors.items()} == expected, path.name
        load_adapter(fresh, path)


def test_the_run_is_in_postgresql_and_the_registered_model_comes_back_from_s3(cloud, submitted, tmp_path):
    """The job logged to the head's MLflow server without being told where it is (the head's environment
    said so): the run and the model version are rows in PostgreSQL, and the version's files download
    through the server from the bucket, byte for byte what the bucket holds."""
    import mlflow
    import psycopg

    from recfound.tracking.registry import download_registered_adapter

    assert submitted["done"].returncode == 0
    client = mlflow.MlflowClient(cloud["tracking_uri"], registry_uri=cloud["tracking_uri"])
    version = client.get_registered_model(MODEL_NAME).latest_versions[0]
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED" and run.data.params["train.zero_stage"] == "3"
    with psycopg.connect(cloud["database"]) as database:
        assert database.execute("SELECT status FROM runs WHERE run_uuid = %s", (version.run_id,)).fetchall() == [
            ("FINISHED",)]
        assert database.execute("SELECT version FROM model_versions WHERE name = %s", (MODEL_NAME,)).fetchall() == [(1,)]
    downloaded = download_registered_adapter(cloud["tracking_uri"], MODEL_NAME, version.version, tmp_path)
    files = {path.relative_to(downloaded).as_posix(): path.read_bytes() for path in downloaded.rglob("*") if path.is_file()}
    # The registered model's adapter is the run's merged adapter, byte for byte.
    assert files["artifacts/merged.safetensors"] == (cloud["folder"] / "runs" / "cloud" / "merged.safetensors").read_bytes()
    assert "MLmodel" in files
    in_bucket = s3_objects(cloud["s3"]["AWS_ENDPOINT_URL"], BUCKET, ARTIFACTS_PREFIX + "/")
    for name, content in files.items():
        matches = [key for key in in_bucket if key.endswith("/" + name)]
        assert matches and any(in_bucket[key] == content for key in matches), name
    # Nothing of the run went to the job's local disk in place of the bucket.
    assert not (cloud["folder"] / "runs" / "mlartifacts").exists()


def test_idle_worker_nodes_are_released(cloud, submitted):
    """After the job, the worker nodes stay idle past the idle timeout and the autoscaler removes them:
    0 -> 2 -> 0."""
    assert submitted["done"].returncode == 0
    cluster = cloud["cluster"]

    def only_the_head() -> bool:
        alive = [node for node in cluster.nodes() if node["state"] == "ALIVE"]
        return [node["is_head_node"] for node in alive] == [True]

    wait_until(only_the_head, 120, "the idle worker nodes being removed", interval_s=1.0)
    gone = [node for node in cluster.nodes() if not node["is_head_node"]]
    assert WORKERS <= len(gone) <= 2 * WORKERS and all(node["state"] == "DEAD" for node in gone)
