"""`ray job submit` with the real `ray` CLI against a local head started here runs jobs/train.py to the end.

The head is this test's own (its own ports and temp dir, started with `ray start --head --block` in a
new session) and is stopped by killing that session's processes, never with `ray stop`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _wait_for(url: str, timeout_s: float, head: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the Ray dashboard at {url} did not come up in {timeout_s} s")


@pytest.fixture
def ray_head():
    """(dashboard address, environment) of a private head node; its processes are killed afterwards."""
    bin_dir = Path(sys.executable).parent
    # Not the session cluster's address and port (tests/conftest.py): this head is a cluster of its own.
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", RAY_AUTH_MODE="disabled", RAY_worker_niceness="0")
    temp_dir = tempfile.mkdtemp(prefix="rf-head-")  # short: Ray's socket paths must stay under 108 bytes
    # Every port our own: the session's local cluster (started by earlier tests) holds Ray's default agent
    # ports, and a job agent that cannot bind its port never registers ("No available agent").
    gcs, dashboard, client, node_manager, object_manager, *agents = _free_ports(9)
    head = subprocess.Popen(
        [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         f"--temp-dir={temp_dir}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
         f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
         f"--dashboard-agent-listen-port={agents[0]}", f"--dashboard-agent-grpc-port={agents[1]}",
         f"--metrics-export-port={agents[2]}", f"--runtime-env-agent-port={agents[3]}", "--disable-usage-stats"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(f"http://127.0.0.1:{dashboard}/api/version", 90, head)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for sig, grace_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 20)):
            try:
                os.killpg(head.pid, sig)
                head.wait(timeout=grace_s)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_training_job(ray_head, tmp_path):
    address, env = ray_head
    command = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", address,
               "--working-dir", str(REPO), "--", "python", "jobs/train.py", "--config", "jobs/configs/demo.yaml",
               "--set", f"run.output_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'data'}",
               "--set", "run.name=submitted", "--set", "data.tasks=[Q2I, SA]", "--set", "train.steps=3",
               "--set", "checkpoint.every=1",
               "--set", "data.val_per_task=4", "--set", "sched.eval_interval=1",
               "--set", "eval.enabled=false"]  # the evaluation after training has its tests (test_train_job)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== summary" in done.stdout and "registered: models:/recfound-demo/1" in done.stdout
    assert (tmp_path / "runs" / "submitted" / "merged.safetensors").is_file()
