"""Real services on loopback for the cloud-path tests: a private PostgreSQL server, an S3-compatible
server (moto), and a fake multi-node Ray cluster with an autoscaler (Ray's fake node provider: each
"node" it adds is a real raylet on this machine). Each is started in its own temp folder on free
ports and stopped by PID, never with `ray stop` (which stops every Ray of the user)."""

from __future__ import annotations

import contextlib
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
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` free loopback ports, all different (bound together while they are chosen)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


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


def _ray_environment(token_file: Path, extra: dict[str, str]) -> dict[str, str]:
    """A cluster process's environment: none of the suite's own cluster's variables, token auth, `extra`."""
    environment = {key: value for key, value in os.environ.items() if key not in RAY_CLIENT_ENV}
    environment.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file), "RAY_worker_niceness": "0",
                        "PATH": f"{BIN_DIR}{os.pathsep}{os.environ['PATH']}", **extra})
    return environment


def _node_ports(flags: tuple[str, ...]) -> dict[str, int]:
    """A free port for each flag, and for the per-node ports `ray start` would otherwise take at their fixed
    defaults (several nodes on one machine), all different."""
    flags = (*flags, "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port")
    return dict(zip(flags, free_ports(len(flags))))


def _head_ports() -> dict[str, int]:
    return _node_ports(("port", "dashboard-port", "ray-client-server-port"))


def _gcs_address(ports: dict[str, int]) -> str:
    from ray._private.services import get_node_ip_address

    return f"{get_node_ip_address()}:{ports['port']}"


# Ray gives a starting node a fixed 30 s to register with the GCS (not configurable in Ray 2.60) and exits with
# this line when it does not; on 2 cores busy with another test worker's jobs (or a hog), a node has missed it.
# Such a start is tried again. Five attempts (about 40 s each) outlast the three-node run beside it: the
# cloud cluster's head, started while that run trained, missed the deadline three times in a row (2026-12-05).
RAY_START_DEADLINE = "The current node timed out during startup"
START_ATTEMPTS = 5


@dataclass
class RayStart:
    """One `ray start --block` process (in a process group of its own) and where its output begins in its log."""

    process: subprocess.Popen
    log_path: Path
    log_offset: int

    @classmethod
    def run(cls, command: list[str], env: dict[str, str], log_path: Path) -> RayStart:
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return cls(process, log_path, offset)

    def missed_the_deadline(self, what: str, attempt: int) -> bool:
        """Whether it exited on Ray's start-up deadline with attempts left (then it is to be started again);
        False while it runs; RuntimeError with its output's end when it exited otherwise or on its last attempt."""
        if self.process.poll() is None:
            return False
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            output = log.read().decode(errors="replace")
        with contextlib.suppress(ProcessLookupError):  # what it started (its GCS, raylet) outlives it
            os.killpg(self.process.pid, signal.SIGKILL)
        if RAY_START_DEADLINE in output and attempt < START_ATTEMPTS - 1:
            return True
        raise RuntimeError(f"{what} exited (attempt {attempt + 1} of {START_ATTEMPTS}): {output[-3000:]}")


@contextmanager
def _ray_head(folder: Path, ports: dict[str, int], head_resources: dict[str, float], extra_args: list[str],
              extra_env: dict[str, str]) -> Iterator[FakeCluster]:
    """`ray start --head --block` in `folder` on `ports` (`_head_ports`), with a random token; stopped (the
    whole process tree, by PID) when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    token_file = folder / "auth_token"
    token_file.write_text(os.urandom(32).hex())
    gcs_address, dashboard_port = _gcs_address(ports), ports["dashboard-port"]
    custom = {key: value for key, value in head_resources.items() if key not in ("CPU", "GPU")}
    # Its own address in its processes' environment, as the product's private clusters do: Ray Train's
    # placement-group cleaner finds its cluster by it, not by searching the machine (which holds other Rays).
    environment = _ray_environment(token_file, {"RAY_ADDRESS": gcs_address, **extra_env})
    ray_temp = tempfile.mkdtemp(prefix="rf-fc-")  # short: Ray's socket paths must fit in 107 bytes
    command = [str(BIN_DIR / "ray"), "start", "--head", "--block", f"--temp-dir={ray_temp}",
               f"--num-cpus={head_resources.get('CPU', 0):g}", f"--num-gpus={head_resources.get('GPU', 0):g}",
               *([f"--resources={json.dumps(custom)}"] if custom else []), "--dashboard-host=127.0.0.1",
               *(f"--{flag}={port}" for flag, port in ports.items()), *extra_args]
    head = None
    try:
        for attempt in range(START_ATTEMPTS):
            head = RayStart.run(command, environment, folder / "head.log")
            cluster = FakeCluster(head.process, gcs_address, f"http://127.0.0.1:{dashboard_port}", token_file, folder)

            def answers() -> bool | str:
                if head.missed_the_deadline("the cluster's head", attempt):
                    return "again"
                try:
                    return bool(cluster.nodes())
                except (urllib.error.URLError, OSError, KeyError):
                    return False

            if wait_until(answers, START_TIMEOUT_S, "the cluster's dashboard") is True:
                break
        yield cluster
    finally:
        if head is not None:
            stop_tree(head.process, grace_s=3.0)  # a throwaway cluster: nothing in it to save
        shutil.rmtree(ray_temp, ignore_errors=True)


@contextmanager
def fake_autoscaling_cluster(folder: Path, head_resources: dict[str, float], worker_type: str, worker: dict,
                             idle_timeout_minutes: float, head_env: dict[str, str]) -> Iterator[FakeCluster]:
    """`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` in `folder`, on free ports, with a
    random token; `head_env` is added to the head's environment (as cluster.yaml's start command does)."""
    folder.mkdir(parents=True, exist_ok=True)
    ports = _head_ports()
    config_file = folder / "autoscaling.yaml"
    config_file.write_text(yaml.safe_dump(fake_autoscaling_config(head_resources, worker_type, worker,
                                                                  _gcs_address(ports), idle_timeout_minutes)))
    with _ray_head(folder, ports, head_resources, [f"--autoscaling-config={config_file}"],
                   {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", **head_env}) as cluster:
        yield cluster


# --- a Ray cluster of several nodes on this machine ------------------------------------------------


@dataclass
class MultiNodeCluster:
    """A head and worker nodes, each a `ray start --block` process of its own (own temp folder, ports and
    process group), as separate machines would run them; nodes come and go by PID."""

    head: FakeCluster
    environment: dict[str, str]
    nodes: dict[str, subprocess.Popen]
    temp_dirs: list[str]

    def add_nodes(self, nodes: dict[str, dict[str, float]]) -> None:
        """Start worker nodes (name -> CPU and custom resources) side by side; wait until the head lists them
        (a node that misses Ray's start-up deadline is started again, a node that exits otherwise fails)."""
        before = self._alive()
        attempts = dict.fromkeys(nodes, 0)
        starts = {name: self._start_node(name, resources) for name, resources in nodes.items()}

        def joined() -> bool:
            for name, resources in nodes.items():
                if starts[name].missed_the_deadline(f"node {name}", attempts[name]):
                    attempts[name] += 1
                    starts[name] = self._start_node(name, resources)
            return len(self._alive() - before) >= len(nodes)

        wait_until(joined, START_TIMEOUT_S, f"nodes {', '.join(nodes)} joining the cluster")

    def _start_node(self, name: str, resources: dict[str, float]) -> RayStart:
        custom = {key: value for key, value in resources.items() if key != "CPU"}
        ray_temp = tempfile.mkdtemp(prefix=f"rf-{name}-")
        self.temp_dirs.append(ray_temp)
        ports = _node_ports(("node-manager-port", "object-manager-port"))
        command = [str(BIN_DIR / "ray"), "start", "--block", f"--address={self.head.gcs_address}",
                   f"--temp-dir={ray_temp}", f"--num-cpus={resources.get('CPU', 0):g}", "--num-gpus=0",
                   f"--resources={json.dumps(custom)}", *(f"--{flag}={port}" for flag, port in ports.items())]
        start = RayStart.run(command, self.environment, self.head.folder / f"{name}.log")
        self.nodes[name] = start.process
        return start

    def _alive(self) -> set[str]:
        """The ids of the nodes the head lists as alive."""
        return {node["node_id"] for node in self.head.nodes() if node["state"] == "ALIVE"}

    def kill_node(self, name: str) -> None:
        """SIGKILL node `name`'s process group and whatever of its tree left the group, as a lost machine."""
        process = self.nodes.pop(name)
        try:
            tree = psutil.Process(process.pid).children(recursive=True)  # before the group goes
        except psutil.NoSuchProcess:
            tree = []
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for member in tree:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        stop_tree(process, stop_signal=signal.SIGKILL, grace_s=1.0)


# The head declares a killed node dead after 5 missed health checks 1 s apart (Ray's default: 3 s apart), so
# the placement attempts after a node loss stop counting it sooner; a live node under load answers within 5 s.
NODE_DEATH_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "5000",
                        "RAY_health_check_failure_threshold": "5"}


@contextmanager
def multi_node_cluster(folder: Path, head_resources: dict[str, float], environment: dict[str, str]) -> Iterator[MultiNodeCluster]:
    """A head (`head_resources`) to which worker nodes are added (`MultiNodeCluster.add_nodes`); `environment`
    reaches every node's processes (object-store credentials, say). Everything is stopped by PID at the end."""
    with _ray_head(folder, _head_ports(), head_resources, [], {**NODE_DEATH_DETECTION, **environment}) as head:
        cluster = MultiNodeCluster(head, _ray_environment(head.token_file, {"RAY_ADDRESS": head.gcs_address,
                                                                             **environment}), {}, [])
        try:
            yield cluster
        finally:
            for name in list(cluster.nodes):
                stop_tree(cluster.nodes.pop(name), grace_s=3.0)
            for path in cluster.temp_dirs:
                shutil.rmtree(path, ignore_errors=True)
