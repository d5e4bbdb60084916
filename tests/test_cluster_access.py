"""The private local Ray cluster (the one `recfound train`, `demo` and `sweep` start, and this suite's) is
not open to whoever reaches the machine: its dashboard listens on 127.0.0.1 only, and token
authentication guards the rest (Ray 2.60's GCS, raylet and workers listen on every interface)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import grpc
import pytest

LOOPBACK = {"127.0.0.1", "::1"}


def _status(url: str, headers: dict[str, str]) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_dashboard_is_on_loopback_and_everything_asks_for_the_token(ray_cluster):
    import psutil
    from ray._private.worker import get_dashboard_url

    token = os.environ["RAY_AUTH_TOKEN"]
    assert os.environ["RAY_AUTH_MODE"] == "token" and len(token) >= 32
    dashboard = get_dashboard_url()
    host, port = dashboard.rsplit(":", 1)
    assert host == "127.0.0.1"
    listening = []
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:  # Ray's worker processes come and go
            listening += [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    on_dashboard_port = [c.laddr.ip for c in listening if c.laddr.port == int(port)]
    assert on_dashboard_port and set(on_dashboard_port) <= LOOPBACK, on_dashboard_port
    # The jobs API (what `ray job submit` uses) without the token, with a wrong one, with the right one.
    jobs = f"http://{dashboard}/api/jobs/"
    assert _status(jobs, {}) == 401
    assert _status(jobs, {"Authorization": f"Bearer {'0' * len(token)}"}) in (401, 403)
    assert _status(jobs, {"Authorization": f"Bearer {token}"}) == 200
    # The GCS (what every Ray process talks to first) answers a call without the token, or with a wrong
    # one, with UNAUTHENTICATED, and the same call with the token.
    with grpc.insecure_channel(os.environ["RAY_ADDRESS"]) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo")
        for metadata in ((), (("authorization", f"Bearer {'f' * len(token)}"),)):
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", metadata=metadata, timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert isinstance(call(b"", metadata=(("authorization", f"Bearer {token}"),), timeout=30), bytes)


# A second private cluster, started in another process while this session's runs: it submits a job to itself.
SECOND_CLUSTER = """
import json, os, time
import ray
from ray._private.worker import get_dashboard_url
from ray.job_submission import JobSubmissionClient
from recfound.cluster import private_cluster

with private_cluster(1):
    client = JobSubmissionClient(f"http://{get_dashboard_url()}",
                                 headers={"Authorization": f"Bearer {os.environ['RAY_AUTH_TOKEN']}"})
    deadline = time.monotonic() + 120
    while True:  # the job server answers "no available agent" until the cluster's agent is up (slow when busy)
        try:
            job = client.submit_job(entrypoint="python -c 'print(6 * 7)'")
            break
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(2)
    deadline = time.monotonic() + 120
    while not client.get_job_status(job).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    print(json.dumps({"agent_port": ray._private.worker.global_worker.node.dashboard_agent_listen_port,
                      "status": str(client.get_job_status(job)), "logs": client.get_job_logs(job)}))
"""


def test_two_private_clusters_on_one_machine_each_take_submitted_jobs(ray_cluster):
    """Ray's dashboard agent, which takes `ray job submit`s, listens on a fixed port unless told otherwise;
    each private cluster gives its agent a free one, so a second cluster on the machine (another run's, or
    a user's `ray start` one) keeps its own job agent, and this one has its own too."""
    import json
    import subprocess
    import sys

    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT
    from ray._private.worker import global_worker

    assert global_worker.node.dashboard_agent_listen_port not in (0, DEFAULT_DASHBOARD_AGENT_LISTEN_PORT)
    done = subprocess.run([sys.executable, "-c", SECOND_CLUSTER], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(done.stdout.strip().splitlines()[-1])
    assert second["status"] == "SUCCEEDED" and "42" in second["logs"].splitlines(), second
    assert second["agent_port"] not in (0, DEFAULT_DASHBOARD_AGENT_LISTEN_PORT, global_worker.node.dashboard_agent_listen_port)
