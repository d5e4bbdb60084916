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
