"""The private local Ray cluster (the one `recfound train`, `demo` and `sweep` start, and this suite's) is
not open to whoever reaches the machine: its dashboard listens on 127.0.0.1 only, and token
authentication guards the rest (Ray 2.60's GCS, raylet and workers listen on every interface)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

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
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    on_dashboard_port = [c.laddr.ip for p in processes for c in p.net_connections(kind="inet")
                         if c.status == psutil.CONN_LISTEN and c.laddr.port == int(port)]
    assert on_dashboard_port and set(on_dashboard_port) <= LOOPBACK, on_dashboard_port
    # The jobs API (what `ray job submit` uses) without the token, and with it.
    jobs = f"http://{dashboard}/api/jobs/"
    assert _status(jobs, {}) == 401
    assert _status(jobs, {"Authorization": f"Bearer {token}"}) == 200
    # A process without the token cannot join the cluster through its GCS.
    env = {key: value for key, value in os.environ.items() if key != "RAY_AUTH_TOKEN"}
    joined = subprocess.run([sys.executable, "-c", "import ray; ray.init(); print('joined')"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert joined.returncode != 0 and "joined" not in joined.stdout
    assert "token" in joined.stderr.lower(), joined.stderr[-2000:]
