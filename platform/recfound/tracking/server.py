"""The MLflow tracking server of a cluster: a PostgreSQL backend store and artifacts in a bucket.

On one machine runs log to a SQLite file (`recfound.tracking.store`). A cluster's head starts this
server instead (cluster.yaml's head start commands): `mlflow server` on the head (on all its interfaces:
training rank 0 logs from a GPU node; the cluster's firewall keeps it inside), its backend store and artifact destination from `MLFLOW_BACKEND_STORE_URI` and
`MLFLOW_ARTIFACTS_DESTINATION` (MLflow's own variables), read from the environment or from an env file
the launcher copies to the head, so the database password never appears in a config or a process
list. The server proxies the artifacts (`mlflow-artifacts:/`): clients need no bucket credentials; the
server uses the standard ones (an instance role, or `AWS_ACCESS_KEY_ID` and friends, with
`MLFLOW_S3_ENDPOINT_URL` for an S3-compatible store).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from recfound.cluster import LOOPBACK
from recfound.redact import without_password

BACKEND_ENV, ARTIFACTS_ENV = "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"
REQUIRED = (BACKEND_ENV, ARTIFACTS_ENV)
DEFAULT_START_TIMEOUT_S = 120.0  # a new PostgreSQL store runs MLflow's migrations first
STOP_GRACE_S = 10.0


class TrackingServerError(ValueError):
    """The server could not be configured, started or stopped; the message says what to do."""


def read_env_file(path: str | Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and `#` comments skipped; `export ` and quotes allowed)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise TrackingServerError(f"{path}: cannot read the env file: {error.strerror}") from None
    values = {}
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, equals, value = text.removeprefix("export ").partition("=")
        if not equals or not key.strip().isidentifier():
            raise TrackingServerError(f"{path}:{number}: expected KEY=VALUE, e.g. {BACKEND_ENV}=postgresql://...")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def server_environment(env_file: str | Path | None) -> dict[str, str]:
    """This process's environment with the env file's values on top; both settings required."""
    # Without MLflow's job runner (its GenAI jobs; two task-queue consumers besides the server).
    environment = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ,
                   **(read_env_file(env_file) if env_file else {})}
    missing = [key for key in REQUIRED if not environment.get(key)]
    if missing:
        where = f"in {env_file} or the environment" if env_file else "in the environment (or pass --env-file)"
        raise TrackingServerError(f"{' and '.join(missing)} not set {where}: e.g. {BACKEND_ENV}=postgresql://USER:"
                                  f"PASSWORD@HOST:5432/mlflow and {ARTIFACTS_ENV}=s3://BUCKET/mlflow (docs/cloud.md)")
    return environment


def server_command(host: str, port: int) -> list[str]:
    """`mlflow server` of this environment, serving (proxying) artifacts; store and destination from the
    environment, so no secret is on the command line."""
    return [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
            "--serve-artifacts"]


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _running_pid(pid_file: Path) -> int | None:
    """The pid of the server the pid file names, if that very process still runs: a process group leader
    running `mlflow server`, started when the file says (a pid reused by another program is not it)."""
    import psutil

    try:
        fields = pid_file.read_text().split()
        pid, started = int(fields[0]), float(fields[1]) if len(fields) > 1 else None
        process = psutil.Process(pid)
        ours = (os.getpgid(pid) == pid and "mlflow" in " ".join(process.cmdline())
                and (started is None or abs(process.create_time() - started) < 1.0))
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if ours else None


def _write_pid_file(pid_file: Path, pid: int) -> None:
    """The server's pid and start time (what `_running_pid` checks)."""
    import psutil

    pid_file.write_text(f"{pid} {psutil.Process(pid).create_time()}\n")


def _listening_ports(pid: int) -> set[int]:
    """The ports the process or one of its children (MLflow's web workers) listens on."""
    import psutil

    try:
        parent = psutil.Process(pid)
        return {connection.laddr.port for process in (parent, *parent.children(recursive=True))
                for connection in process.net_connections(kind="inet") if connection.status == psutil.CONN_LISTEN}
    except psutil.Error:
        return set()


# "KeyError: ...", and SQLAlchemy's "(psycopg.OperationalError) connection ... refused"
EXCEPTION_LINE = re.compile(r"^\(?[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def _last_line(log_file: Path) -> str:
    """The server's last exception line (the one that ended it), else its last line; without passwords."""
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    raised = [line for line in lines if EXCEPTION_LINE.match(line)]
    return without_password((raised or lines or ["(empty log)"])[-1])[:400]


def start_server(host: str, port: int, log_file: str | Path, pid_file: str | Path, environment: dict[str, str],
                 timeout_s: float = DEFAULT_START_TIMEOUT_S) -> str:
    """Start the server in the background (it outlives this process) with `environment`
    (`server_environment`) and wait until it answers; its URL. A server this pid file names that still runs
    and answers is kept (starting again is harmless)."""
    reachable = LOOPBACK if host in ("0.0.0.0", "::", "") else host  # all interfaces: ask on this machine's own
    url, pid_path, log_path = f"http://{reachable}:{port}", Path(pid_file), Path(log_file)
    running = _running_pid(pid_path)
    if running is not None:  # started by an earlier call: it answers, or it is still starting
        deadline = time.monotonic() + timeout_s
        while _alive(running) and time.monotonic() < deadline:
            ports = _listening_ports(running)
            if port in ports and is_healthy(url):
                return url
            if ports - {port}:
                raise TrackingServerError(f"the server {pid_path} names runs on port {min(ports)}, not {port}: stop "
                                          f"it first (recfound mlflow-server stop --pid-file {pid_path})")
            time.sleep(0.5)
    if is_healthy(url):
        raise TrackingServerError(f"another server already answers at {url} (not the one {pid_path} names): stop it, "
                                  "or choose another --port")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(server_command(host, port), env=environment, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _write_pid_file(pid_path, process.pid)
    deadline = time.monotonic() + timeout_s
    while not (is_healthy(url) and port in _listening_ports(process.pid)):  # its own answer, not another's
        if process.poll() is not None:
            pid_path.unlink(missing_ok=True)
            raise TrackingServerError(f"the MLflow server exited with status {process.returncode}: "
                                      f"{_last_line(log_path)} (whole log: {log_path})")
        if time.monotonic() > deadline:
            stop_server(pid_path)
            raise TrackingServerError(f"the MLflow server did not answer at {url} within {timeout_s:g} s: "
                                      f"{_last_line(log_path)} (whole log: {log_path})")
        time.sleep(0.5)
    return url


def stop_server(pid_file: str | Path) -> bool:
    """Stop the server the pid file names (its whole process group: MLflow's web workers too); whether
    one was running."""
    pid_path = Path(pid_file)
    pid = _running_pid(pid_path)
    pid_path.unlink(missing_ok=True)
    if pid is None:
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + STOP_GRACE_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):  # whatever of the group is left (its web workers)
        os.killpg(pid, signal.SIGKILL)
    return True


def _alive(pid: int) -> bool:
    """Whether the process still runs (an exited one nobody has reaped yet counts as gone)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(environment: dict[str, str]) -> str:
    """Where the server keeps runs and artifacts, without passwords."""
    return f"backend {without_password(environment[BACKEND_ENV])}, artifacts {environment[ARTIFACTS_ENV]}"
