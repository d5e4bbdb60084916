"""The shipped cluster launcher configs (cluster.yaml for AWS, deploy/gcp/cluster.yaml) pass Ray's own
checks (`prepare_config` + `validate_config`, what `ray up` enforces) and fit the paper's training config;
bad launcher input, a missing token and a misconfigured MLflow server each give one line naming the
key or the file. (The configs in action: test_cloud_cluster.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from recfound.cloud import LauncherError, check_fit, load_launcher_config, mounted_file_problems
from recfound.config import load_config

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = {"aws": REPO / "cluster.yaml", "gcp": REPO / "deploy" / "gcp" / "cluster.yaml"}
PAPER = REPO / "jobs" / "configs" / "mistral7b-8xh100.yaml"
SPOT_TYPES = {"aws": "gpu_h100_spot", "gcp": "gpu_h100_preemptible"}


def paper_config(*overrides: str):
    return load_config(PAPER, list(overrides), check_paths=False)


def version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def start_command(launcher: dict, which: str) -> str:
    return " ".join(launcher[f"{which}_start_ray_commands"])


@pytest.mark.parametrize("cloud", sorted(LAUNCHERS))
def test_shipped_launcher_config_passes_rays_checks_and_fits_the_paper_run(cloud):
    launcher = load_launcher_config(LAUNCHERS[cloud])
    assert check_fit(launcher, paper_config()) == []
    types, head = launcher["available_node_types"], launcher["head_node_type"]
    # The head: no GPU advertised, and `ray start` says the same as the autoscaler's view of it.
    assert types[head]["resources"]["GPU"] == 0
    head_start = start_command(launcher, "head")
    assert f"--num-gpus={types[head]['resources']['GPU']}" in head_start
    assert f"--num-cpus={types[head]['resources']['CPU']}" in head_start
    # The GPU types: 8 H100s per node, none when idle, and a spot/preemptible twin of the same node.
    gpu, spot = types["gpu_h100"], types[SPOT_TYPES[cloud]]
    assert gpu["resources"]["GPU"] == spot["resources"]["GPU"] == 8 and gpu["min_workers"] == spot["min_workers"] == 0
    assert gpu["max_workers"] >= 1 and launcher["idle_timeout_minutes"] > 0
    if cloud == "aws":
        assert gpu["node_config"]["InstanceType"] == spot["node_config"]["InstanceType"] == "p5.48xlarge"
        assert spot["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}
    else:
        assert gpu["node_config"]["machineType"] == spot["node_config"]["machineType"] == "a3-highgpu-8g"
        assert gpu["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
        assert spot["node_config"]["scheduling"] == {"preemptible": True, "onHostMaintenance": "TERMINATE",
                                                     "automaticRestart": False}
    # Token auth on every node, from the file the launcher copies; the dashboard on the head's loopback;
    # the MLflow server before Ray, its URI in the head's environment; the project's image.
    for which in ("head", "worker"):
        assert "RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=~/.ray/auth_token" in start_command(launcher, which)
    assert launcher["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--dashboard-host=127.0.0.1" in head_start
    assert head_start.index("recfound mlflow-server start") < head_start.index("ray start --head")
    assert "MLFLOW_TRACKING_URI=http://$HEAD_IP:5000" in head_start
    assert launcher["docker"]["image"] == f"registry.example.com/recfound:{version()}"


def write_variant(tmp_path: Path, cloud: str, change) -> Path:
    """A copy of a shipped launcher config with `change` applied to its parsed content."""
    raw = yaml.safe_load(LAUNCHERS[cloud].read_text())
    change(raw)
    path = tmp_path / f"{cloud}-variant.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_typo_in_a_launcher_config_is_named_with_the_key_it_meant(tmp_path):
    top = write_variant(tmp_path, "aws", lambda raw: raw.update(idle_timeout_minute=raw.pop("idle_timeout_minutes")))
    with pytest.raises(LauncherError, match=r"aws-variant\.yaml: the top level: unknown key 'idle_timeout_minute' "
                                            r"\(did you mean idle_timeout_minutes\?\)"):
        load_launcher_config(top)

    def typo_in_gpu_type(raw):
        raw["available_node_types"]["gpu_h100"]["min_worker"] = raw["available_node_types"]["gpu_h100"].pop("min_workers")

    nested = write_variant(tmp_path, "gcp", typo_in_gpu_type)
    with pytest.raises(LauncherError, match=r"available_node_types\.gpu_h100: unknown key 'min_worker' \(did you mean "
                                            r"min_workers\?\)"):
        load_launcher_config(nested)
    no_provider = write_variant(tmp_path, "aws", lambda raw: raw.pop("provider"))
    with pytest.raises(LauncherError, match=r"aws-variant\.yaml: missing required key 'provider'"):
        load_launcher_config(no_provider)
    wrong_type = write_variant(tmp_path, "aws", lambda raw: raw.update(max_workers="four"))
    with pytest.raises(LauncherError, match=r"max_workers: 'four' is not of type 'integer'"):
        load_launcher_config(wrong_type)


def test_a_worker_type_without_gpus_or_with_an_unasked_resource_does_not_fit(tmp_path):
    def no_gpus(raw):
        for name in ("gpu_h100", "gpu_h100_spot"):
            raw["available_node_types"][name]["resources"].pop("GPU")

    launcher = load_launcher_config(write_variant(tmp_path, "aws", no_gpus))
    assert check_fit(launcher, paper_config()) == [
        "available_node_types.gpu_h100|gpu_h100_spot.resources: no worker type holds one training worker "
        "{CPU: 8, GPU: 1} (declare each type's resources)"]
    shipped = load_launcher_config(LAUNCHERS["aws"])
    shipped["available_node_types"]["gpu_h100"]["resources"]["h100_node"] = 8
    assert check_fit(shipped, paper_config()) == [
        "available_node_types.gpu_h100.resources.h100_node: advertised, but the training config does not ask for it "
        "(train.worker_resource is None)"]
    assert check_fit(shipped, paper_config("train.worker_resource=h100_node")) == []  # asked for: the type fits
    # More workers than the GPU nodes can hold, and a GPU on the head.
    assert check_fit(load_launcher_config(LAUNCHERS["aws"]), paper_config("train.num_workers=40")) == [
        "max_workers: the worker types hold at most 32 training worker(s) of {CPU: 8, GPU: 1}, the job asks for 40"]
    head_gpu = write_variant(tmp_path, "gcp", lambda raw: raw["available_node_types"]["head"]["resources"].update(GPU=1))
    assert check_fit(load_launcher_config(head_gpu), paper_config())[0].startswith(
        "available_node_types.head.resources: the head must advertise GPU: 0")
    # A CPU-only job: its workers fit on the head, where Ray would place them.
    assert check_fit(load_launcher_config(LAUNCHERS["aws"]), paper_config("train.use_gpu=false")) == [
        "available_node_types.head.resources: the head {CPU: 8, GPU: 0} holds a training worker {CPU: 8}: ask each "
        "worker for a GPU (train.use_gpu) or for a resource only the worker types advertise (train.worker_resource)"]
    # A worker resource no type advertises is named as such.
    assert check_fit(load_launcher_config(LAUNCHERS["aws"]), paper_config("train.worker_resource=fake_h100")) == [
        "available_node_types.gpu_h100|gpu_h100_spot.resources: no worker type holds one training worker "
        "{CPU: 8, GPU: 1, fake_h100: 1} (no worker type advertises fake_h100, which train.worker_resource asks for)"]


def test_min_workers_above_max_workers_is_refused_not_quietly_lowered(tmp_path):
    def above(raw):
        raw["available_node_types"]["gpu_h100"].update(min_workers=3, max_workers=2)

    with pytest.raises(LauncherError, match=r"aws-variant.yaml: available_node_types.gpu_h100.min_workers: 3 is more "
                                            "than its max_workers 2"):
        load_launcher_config(write_variant(tmp_path, "aws", above))
    with pytest.raises(LauncherError, match="min_workers: not a top-level key"):
        load_launcher_config(write_variant(tmp_path, "aws", lambda raw: raw.update(min_workers=1)))


def test_missing_mounted_files_and_a_missing_token_are_one_line_each(tmp_path, monkeypatch, capsys):
    from recfound.cli import main
    from recfound.cluster import require_token

    monkeypatch.setenv("HOME", str(tmp_path))
    launcher = load_launcher_config(LAUNCHERS["aws"])
    token, settings = tmp_path / ".ray" / "auth_token", tmp_path / ".recfound" / "mlflow.env"
    assert mounted_file_problems(launcher) == [
        f"file_mounts: '~/.ray/auth_token' is copied from {token}, which does not exist here: create the cluster's Ray "
        "token there with `ray get-auth-token --generate` (docs/cloud.md, step 2)",
        f"file_mounts: '~/.recfound/mlflow.env' is copied from {settings}, which does not exist here: write the MLflow "
        "server's settings there (docs/cloud.md, step 2)"]
    assert main(["cluster", "check", str(LAUNCHERS["aws"]), "--config", str(PAPER)]) == 1
    said = capsys.readouterr().err.splitlines()  # one error line each
    assert [line.split(": file_mounts: ")[0] for line in said] == [f"recfound: error: {LAUNCHERS['aws']}"] * 2
    assert "'~/.ray/auth_token'" in said[0] and "'~/.recfound/mlflow.env'" in said[1]
    token.parent.mkdir()
    token.write_text("t" * 64)
    settings.parent.mkdir()
    settings.write_text("MLFLOW_BACKEND_STORE_URI=postgresql://u@db/mlflow\n")
    assert main(["cluster", "check", str(LAUNCHERS["aws"]), "--config", str(PAPER)]) == 0
    assert capsys.readouterr().out.startswith(f"{LAUNCHERS['aws']}: ok: head head, worker types gpu_h100 (max 4), "
                                              "gpu_h100_spot (max 0), at most 4 worker node(s)")
    # A job attaching to a cluster with token auth on and no token: one line saying where it looked.
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere" / "token"))
    with pytest.raises(ConnectionError, match=r"^RAY_AUTH_MODE=token but no Ray token: \$RAY_AUTH_TOKEN is not set and "
                                              rf"{re.escape(str(tmp_path / 'elsewhere' / 'token'))} \(named by "
                                              r"\$RAY_AUTH_TOKEN_PATH\) does not exist"):
        require_token()
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    require_token()  # ~/.ray/auth_token exists now
    token.unlink()
    with pytest.raises(ConnectionError, match=rf"and {re.escape(str(token))} does not exist; put the cluster's token"):
        require_token()


def test_mlflow_server_settings_errors_name_the_file_line_or_variable(tmp_path, monkeypatch):
    from recfound.tracking.server import TrackingServerError, describe, read_env_file, server_environment

    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION"):
        monkeypatch.delenv(key, raising=False)
    env_file = tmp_path / "mlflow.env"
    env_file.write_text("# the server's settings\nexport MLFLOW_BACKEND_STORE_URI='postgresql://ml:s3cret@db:5432/m'\n"
                        "MLFLOW_ARTIFACTS_DESTINATION=s3://bucket/mlflow\n")
    environment = server_environment(env_file)
    assert describe(environment) == "backend postgresql://ml@db:5432/m, artifacts s3://bucket/mlflow"
    env_file.write_text("MLFLOW_BACKEND_STORE_URI=postgresql://db/m\npostgresql://oops\n")
    with pytest.raises(TrackingServerError, match=rf"^{re.escape(str(env_file))}:2: expected KEY=VALUE"):
        read_env_file(env_file)
    env_file.write_text("MLFLOW_BACKEND_STORE_URI=postgresql://db/m\n")
    with pytest.raises(TrackingServerError, match=rf"^MLFLOW_ARTIFACTS_DESTINATION not set in {re.escape(str(env_file))} "
                                                  "or the environment"):
        server_environment(env_file)


def test_mlflow_server_that_cannot_start_says_why_in_one_line(tmp_path, capsys):
    """A backend store the server cannot open: `recfound mlflow-server start` ends with the server's own
    error line, not a wait, and leaves no pid file behind."""
    from cloud_services import free_port
    from recfound.cli import main
    from recfound.tracking.server import stop_server

    env_file = tmp_path / "mlflow.env"
    env_file.write_text("MLFLOW_BACKEND_STORE_URI=nosuchdb://x/y\nMLFLOW_ARTIFACTS_DESTINATION=s3://bucket/mlflow\n")
    pid_file = tmp_path / "server.pid"
    try:
        status = main(["mlflow-server", "start", "--env-file", str(env_file), "--port", str(free_port()), "--log-file",
                       str(tmp_path / "server.log"), "--pid-file", str(pid_file), "--timeout", "120"])
    finally:
        stop_server(pid_file)  # had it started after all
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert line.startswith("recfound: error: the MLflow server exited with status 1: mlflow.tracking.registry."
                           "UnsupportedModelRegistryStoreURIException:") and "'nosuchdb://x/y'" in line, line
    assert not pid_file.exists()


def test_stop_never_kills_a_process_the_pid_file_does_not_name_as_its_server(tmp_path):
    """A stale pid file (the server gone, its pid reused) names another program: `mlflow-server stop` leaves
    it alone and says no server ran."""
    import subprocess
    import sys

    from recfound.tracking.server import stop_server

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        pid_file = tmp_path / "server.pid"
        pid_file.write_text(str(other.pid))  # as an older recfound wrote it: the pid alone
        assert stop_server(pid_file) is False and not pid_file.exists()
        assert other.poll() is None  # still running
    finally:
        other.kill()
        other.wait(timeout=30)


def test_start_refuses_a_port_where_another_server_answers(tmp_path):
    """`mlflow-server start` on a port another server answers on fails at once, instead of reporting that
    server as its own (its own process would die on the taken port)."""
    import http.server
    import threading

    from recfound.tracking.server import TrackingServerError, start_server

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's name is http.server's
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        port = other.server_address[1]
        with pytest.raises(TrackingServerError, match=f"another server already answers at http://127.0.0.1:{port} "
                                                      rf"\(not the one {tmp_path / 'server.pid'} names\)"):
            start_server("127.0.0.1", port, tmp_path / "server.log", tmp_path / "server.pid", {}, timeout_s=10)
        assert not (tmp_path / "server.pid").exists()
    finally:
        other.shutdown()
        other.server_close()


def test_the_servers_last_exception_line_is_found_in_sqlalchemys_wording_too(tmp_path):
    from recfound.tracking.server import _last_line

    log = tmp_path / "server.log"
    log.write_text("INFO starting\n(psycopg.OperationalError) connection failed: Connection refused\n"
                   "(Background on this error at: https://sqlalche.me/e/20/e3q8)\n"
                   "Operation will be retried in 51.1 seconds\n")
    assert _last_line(log) == "(psycopg.OperationalError) connection failed: Connection refused"
