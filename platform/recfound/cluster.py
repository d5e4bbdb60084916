"""Connecting to Ray: the cluster a job was submitted to, else a private local one."""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from recfound.console import quiet_process, ray_log_level

PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train 2.60
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # the port a new local head's GCS listens on
PORT_ATTEMPTS = 3
WORKER_NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet it starts
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"  # where Ray's processes find the token
LOOPBACK = "127.0.0.1"


@contextmanager
def ray_session(num_cpus: int | None = None, log_to_driver: bool = False) -> Iterator[None]:
    """Ray for the duration of a block.

    Reuses Ray if this process already initialised it; attaches to the cluster in `RAY_ADDRESS`
    (set by `ray job submit`); otherwise starts a private local cluster (`private_cluster`), because
    a bare `ray.init()` would attach to any cluster already running on the machine. `log_to_driver`
    shows the workers' output (e.g. the training progress of rank 0) in this process.
    """
    quiet_process()
    import ray

    if ray.is_initialized():
        yield
        return
    if os.environ.get("RAY_ADDRESS"):
        require_token()
        ray.init(logging_level=ray_log_level())
        try:
            yield
        finally:
            ray.shutdown()
        return
    with private_cluster(num_cpus or os.cpu_count() or 1, log_to_driver):
        yield


def token_file() -> Path:
    """The file Ray reads the token from when `RAY_AUTH_TOKEN` is not set."""
    path = os.environ.get(TOKEN_PATH_ENV)
    return Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"


def require_token() -> None:
    """With token authentication on, fail in one line when this process has no token to show the cluster,
    saying where it looked (Ray would refuse the connection with a longer message)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" or os.environ.get(TOKEN_ENV):
        return
    file = token_file()
    if not file.is_file():
        named_by = f" (named by ${TOKEN_PATH_ENV})" if os.environ.get(TOKEN_PATH_ENV) else ""
        raise ConnectionError(f"RAY_AUTH_MODE=token but no Ray token: ${TOKEN_ENV} is not set and {file}{named_by} "
                              "does not exist; put the cluster's token there (docs/cloud.md, step 2)")


@contextmanager
def private_cluster(num_cpus: float, log_to_driver: bool = False, temp_dir: str | None = None) -> Iterator[None]:
    """A new local Ray cluster for this process, shut down after the block.

    - Its dashboard runs (on loopback): Ray Train's placement-group cleaner queries its State API
      about once a second, warns each time it cannot, and without it never releases the worker group
      of a controller that died.
    - Its processes know their own cluster: the cleaner finds the State API through `RAY_ADDRESS`,
      else by looking for running clusters, which fails as soon as a second one runs on the machine
      (another run, a test's). So the GCS port is chosen here and `RAY_ADDRESS` names it in the
      environment the cluster's processes inherit (restored in this process afterwards).
    - Its worker processes run at the same priority as everything else: Ray starts them at niceness 15
      (to keep its own daemons responsive), but here the workers are the job, and at that niceness any
      busy process beside them takes nearly all the CPU (an evaluation that takes 11 s took 120-300 s
      beside one `yes` per core).
    - Its dashboard agent (which takes `ray job submit`s) listens on a free port, not on Ray's fixed 52365:
      with the fixed port, a second cluster on the machine (another run's, a user's `ray start` one) has
      no job agent, or this one takes the port from it.
    - No preemption watcher: nothing preempts this machine.
    - Token authentication (`RAY_AUTH_MODE=token`, with a random token made for this process unless
      `RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH` names one): Ray 2.60's GCS, raylet, workers and agents
      listen on every interface whatever the node address (127.0.0.1 is turned into the machine's
      address), so without a token anyone who can reach this machine could submit work to it. The
      dashboard itself listens on 127.0.0.1. A user's own `RAY_AUTH_MODE` wins.
    """
    import ray
    from ray._private.services import get_node_ip_address

    defaults = {"RAY_AUTH_MODE": "token", PREEMPTION_WATCHER_ENV: "0", WORKER_NICENESS_ENV: "0"}
    saved = {key: os.environ.get(key) for key in ("RAY_ADDRESS", GCS_PORT_ENV, TOKEN_ENV, *defaults)}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if os.environ["RAY_AUTH_MODE"].lower() == "token" and not (os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_PATH_ENV)):
        os.environ[TOKEN_ENV] = _process_token()  # this cluster's processes inherit it
    try:
        for attempt in range(PORT_ATTEMPTS):  # another process may take the free port before the GCS binds it
            port = _free_port()
            os.environ.update({GCS_PORT_ENV: str(port), "RAY_ADDRESS": f"{get_node_ip_address()}:{port}"})
            try:
                with _dashboard_agent_on_a_free_port():
                    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host=LOOPBACK,
                             log_to_driver=log_to_driver, logging_level=ray_log_level(), _temp_dir=temp_dir)
                break
            except Exception as error:  # noqa: BLE001 - Ray raises several kinds when its head fails to start
                ray.shutdown()
                if attempt == PORT_ATTEMPTS - 1:
                    raise ConnectionError(f"could not start a local Ray cluster ({PORT_ATTEMPTS} tries): "
                                       f"{type(error).__name__}: {error}") from error
        try:
            yield
        finally:
            ray.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _dashboard_agent_on_a_free_port() -> Iterator[None]:
    """A local head started in the block gives its dashboard agent a free port (0: the agent binds one and
    registers it, where `ray job submit` finds it). `ray.init` has no parameter for the port (`ray start`
    has `--dashboard-agent-listen-port`), so the default of the parameters it builds is changed for the block."""
    from ray._private.parameter import RayParams

    original = RayParams.__init__

    @functools.wraps(original)
    def any_agent_port(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("dashboard_agent_listen_port", 0)
        original(self, *args, **kwargs)

    RayParams.__init__ = any_agent_port
    try:
        yield
    finally:
        RayParams.__init__ = original


@functools.cache
def _process_token() -> str:
    """One random token per process: Ray keeps the first token it reads for the life of the process, so
    every private cluster this process starts uses the same one."""
    return secrets.token_hex(32)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def has_autoscaler() -> bool:
    """Whether an autoscaler may add nodes to the cluster.

    Autoscaler v2 (KubeRay) reports its cluster config to the GCS. Autoscaler v1 (the cluster launcher's
    default, `ray up`) does not, but its monitor writes a status to the GCS's key-value store every few
    seconds, naming each node's type. A cluster started without an autoscaling config runs the same
    monitor read-only, where every node is a type of its own named `node_<node id>`: node types named
    otherwise come from a launcher config. (In a v1 cluster's first seconds, before the monitor's first
    status, this says no; jobs are submitted after `ray up` has returned.)
    """
    from ray._private import ray_constants
    from ray._private.state import state  # Ray 2.60 (pinned)
    from ray.experimental.internal_kv import _internal_kv_get

    if state.get_max_resources_from_cluster_config():
        return True
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    if status is None:
        return False
    mapping = (json.loads(status).get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(node_type != f"node_{node_id}" for node_id, node_type in mapping.items())


def on_this_node() -> Any:
    """A Ray scheduling strategy that keeps a task or actor on this process's node (the driver's): what
    must outlive any worker node (the scheduler actor, the token pools, a trial's driver)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
