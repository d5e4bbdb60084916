"""Real services on loopback for the cloud-path tests: a private PostgreSQL server, an S3-compatible
server (moto), and a fake multi-node Ray cluster with an autoscaler (Ray's fake node provider: each
"node" it adds is a real raylet on this machine). Each is started in its own temp folder on free
ports and stopped by PID, never with `ray stop` (which stops every Ray of the user)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml

POSTGRES_BIN = Path(os.environ.get("RECFOUND_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
# Variables of the suite's own cluster (and of the user's) that must not reach another cluster's processes.
RAY_CLIENT_ENV = ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_API_SERVER_ADDRESS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.5):
    """Poll `condition` until it returns something truthy (returned); TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(interval_s)


def stop_tree(process: subprocess.Popen, stop_signal: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> None:
    """Stop a process we started and everything under it (its group and its descendants, which may have
    left the group), politely first, then by force."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        try:
            member.send_signal(stop_signal)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=STOP_GRACE_S)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass


# --- PostgreSQL -----------------------------------------------------------------------------------


def _unprivileged_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, the server runs as `postgres` (or `nobody`)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists to run PostgreSQL as")


@contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL server on a free loopback port with a database `mlflow`; yields its URI.
    Its folder is outside pytest's (root-only) temp folder, so the unprivileged server can reach it."""
    import psycopg

    if not (POSTGRES_BIN / "initdb").is_file():
        raise FileNotFoundError(f"PostgreSQL's initdb is not in {POSTGRES_BIN} (set RECFOUND_TEST_POSTGRES_BIN)")
    user = _unprivileged_user()
    folder = Path(tempfile.mkdtemp(prefix="rf-pg-"))
    if user is not None:
        os.chown(folder, user.pw_uid, user.pw_gid)

    def as_user() -> None:
        if user is not None:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    port, data = free_port(), folder / "data"
    server = None
    try:
        subprocess.run([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
                       preexec_fn=as_user, check=True, capture_output=True, timeout=START_TIMEOUT_S)
        with (folder / "server.log").open("wb") as log:
            server = subprocess.Popen([str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
                                       "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                                       "-c", "full_page_writes=off"],  # a throwaway database: no durability
                                      preexec_fn=as_user, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def accepts() -> bool:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres").close()
                return True
            except psycopg.OperationalError:
                if server.poll() is not None:
                    raise RuntimeError(f"PostgreSQL exited: {(folder / 'server.log').read_text()[-2000:]}") from None
                return False

        wait_until(accepts, START_TIMEOUT_S, "PostgreSQL accepting connections")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as admin:
            admin.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        if server is not None:
            stop_tree(server, signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(folder, ignore_errors=True)


# --- S3 (moto) ------------------------------------------------------------------------------------

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "recfound-test", "AWS_SECRET_ACCESS_KEY": "recfound-test-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server(bucket: str) -> Iterator[dict[str, str]]:
    """moto's S3-compatible server on a free loopback port with one bucket; yields the environment a
    client needs (credentials, and the endpoint for boto3 and for MLflow)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        environment = {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        boto3.client("s3", endpoint_url=endpoint, **_boto_credentials()).create_bucket(Bucket=bucket)
        yield environment
    finally:
        server.stop()


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"]}


def s3_objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix`: key -> content."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, **_boto_credentials())
    keys = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


# --- a fake autoscaling Ray cluster ---------------------------------------------------------------


@dataclass
class FakeCluster:
    """A head started like cluster.yaml's (token auth, dashboard on loopback, MLflow URI in its
    environment) with Ray's fake node provider as its autoscaler."""

    process: subprocess.Popen
    gcs_address: str
    dashboard: str  # http://127.0.0.1:PORT
    token_file: Path
    folder: Path

    def client_env(self, with_token: bool = True) -> dict[str, str]:
        """The environment of a laptop-side `ray` command for this cluster."""
        environment = {key: value for key, value in os.environ.items() if key not in RAY_CLIENT_ENV}
        environment.update({"RAY_AUTH_MODE": "token", "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}"})
        if with_token:
            environment["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        return environment

    def api(self, path: str) -> dict:
        """A dashboard REST call with the token."""
        request = urllib.request.Request(f"{self.dashboard}{path}",
                                         headers={"Authorization": f"Bearer {self.token_file.read_text().strip()}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def nodes(self) -> list[dict]:
        """Every node the cluster has had (State API): state, resources_total, is_head_node."""
        return self.api("/api/v0/nodes?detail=1&limit=1000")["data"]["result"]["result"]


def fake_autoscaling_config(head_resources: dict[str, float], worker_type: str, worker: dict,
                            gcs_address: str, idle_timeout_minutes: float) -> dict:
    """A launcher config for Ray's fake node provider: the head, and one worker type."""
    return {
        "cluster_name": "recfound-fake", "max_workers": worker["max_workers"], "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "use_node_id_as_ip": True,
                     "disable_launch_config_check": True, "disable_node_updaters": True},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "head_node_type": "ray.head.default",
        "available_node_types": {"ray.head.default": {"resources": head_resources, "node_config": {}, "max_workers": 0},
                                 worker_type: {**worker, "node_config": {}}},
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


@contextmanager
def fake_autoscaling_cluster(folder: Path, head_resources: dict[str, float], worker_type: str, worker: dict,
                             idle_timeout_minutes: float, head_env: dict[str, str]) -> Iterator[FakeCluster]:
    """`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` in `folder`, on free ports, with a
    random token; `head_env` is added to the head's environment (as cluster.yaml's start command does)."""
    from ray._private.services import get_node_ip_address

    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "auth_token"
    token_file.write_text(os.urandom(32).hex())
    gcs_address, dashboard_port = f"{get_node_ip_address()}:{free_port()}", free_port()
    config_file = folder / "autoscaling.yaml"
    config_file.write_text(yaml.safe_dump(fake_autoscaling_config(head_resources, worker_type, worker, gcs_address,
                                                                  idle_timeout_minutes)))
    environment = {key: value for key, value in os.environ.items() if key not in RAY_CLIENT_ENV}
    environment.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "token",
                        "RAY_AUTH_TOKEN_PATH": str(token_file), "RAY_worker_niceness": "0",
                        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}", **head_env})
    ray_temp = tempfile.mkdtemp(prefix="rf-fc-")  # short: Ray's socket paths must fit in 107 bytes
    command = [str(BIN_DIR / "ray"), "start", "--head", "--block", f"--port={gcs_address.rsplit(':', 1)[1]}",
               f"--autoscaling-config={config_file}", f"--temp-dir={ray_temp}",
               f"--num-cpus={head_resources.get('CPU', 0):g}", f"--num-gpus={head_resources.get('GPU', 0):g}",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
               f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
               f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
               f"--runtime-env-agent-port={free_port()}"]
    with (folder / "head.log").open("wb") as log:
        process = subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = FakeCluster(process, gcs_address, f"http://127.0.0.1:{dashboard_port}", token_file, folder)
    try:
        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the fake cluster's head exited: {(folder / 'head.log').read_text()[-3000:]}")
            try:
                return bool(cluster.nodes())
            except (urllib.error.URLError, OSError, KeyError):
                return False

        wait_until(answers, START_TIMEOUT_S, "the fake cluster's dashboard")
        yield cluster
    finally:
        stop_tree(process, grace_s=3.0)  # a throwaway cluster: nothing in it to save
        shutil.rmtree(ray_temp, ignore_errors=True)
