"""The run folder: safe names, `--overwrite` that only ever empties a run folder of that name, one writer
per run (a real second process is refused by name), and a killed run's leftovers reported and its
MLflow run marked failed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from recfound.run_folder import MARKER_FILE, RunFolder, RunFolderError


def _hold(output_dir: Path, name: str, ready: Path) -> subprocess.Popen:
    """A real process that takes the run's lock and keeps it until killed."""
    code = textwrap.dedent(f"""
        import pathlib, time
        from recfound.run_folder import RunFolder
        with RunFolder({str(output_dir)!r}, {name!r}) as folder:
            folder.note(mlflow_run_id="abc")
            pathlib.Path({str(ready)!r}).write_text("ready")
            time.sleep(600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert holder.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
        time.sleep(0.05)
    return holder


def test_a_second_process_of_the_same_run_is_refused_naming_the_holder(tmp_path):
    holder = _hold(tmp_path, "busy", tmp_path / "ready")
    try:
        with pytest.raises(RunFolderError, match=rf"run 'busy' is in use by pid {holder.pid} on host \S+ "
                                                 r"\(started \d{4}-\d\d-\d\dT"):
            with RunFolder(tmp_path, "busy"):
                pass
        with RunFolder(tmp_path, "other") as other:  # another run of the same output dir is free
            assert other.previous is None
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # Killed: the kernel dropped its lock; the marker still says "running", which the next start reports.
    with RunFolder(tmp_path, "busy") as again:
        assert again.previous["pid"] == holder.pid and again.previous["mlflow_run_id"] == "abc"
    record = json.loads((tmp_path / "busy" / MARKER_FILE).read_text())
    assert record["state"] == "ended" and record["pid"] == os.getpid()


def test_the_train_command_refuses_a_run_held_by_another_process(tmp_path):
    holder = _hold(tmp_path / "runs", "busy", tmp_path / "ready")
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "recfound"), "train", "--set", "run.name=busy",
                               "--set", f"run.output_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'd'}"],
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert done.returncode != 0
    assert f"recfound: error: run 'busy' is in use by pid {holder.pid} on host" in done.stderr, done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_overwrite_empties_only_the_run_folder_of_that_name(tmp_path):
    runs = tmp_path / "runs"
    (runs / "keep").mkdir(parents=True)
    (runs / "keep" / "weights.bin").write_bytes(b"other run")
    (runs / "mlflow.db").write_bytes(b"store")
    with RunFolder(runs, "mine") as folder:
        (folder.path / "checkpoint_1").mkdir()
        (folder.path / "checkpoint_1" / "adapter.safetensors").write_bytes(b"x")
        (folder.path / "config.yaml").write_text("run: {name: mine}\n")
    with RunFolder(runs, "mine") as folder:
        folder.empty()
        assert [p.name for p in folder.path.iterdir()] == [MARKER_FILE]
    assert (runs / "keep" / "weights.bin").read_bytes() == b"other run" and (runs / "mlflow.db").is_file()


def _folder_with(path, name: str, content: bytes):
    path.mkdir()
    (path / name).write_bytes(content)


def test_a_folder_that_is_not_that_runs_folder_is_never_used(tmp_path):
    _folder_with(tmp_path / "photos", "cat.jpg", b"meow")
    with pytest.raises(RunFolderError, match=r"photos: exists and is not the folder of a run named 'photos' "
                                             r"\(no \.recfound-run or config\.yaml names it\)"):
        with RunFolder(tmp_path, "photos"):
            pass
    _folder_with(tmp_path / "renamed", "config.yaml", b"run: {name: original}\n")
    with pytest.raises(RunFolderError, match=r"not the folder of a run named 'renamed' \(it is the folder of run "
                                             r"'original'\)"):
        with RunFolder(tmp_path, "renamed"):
            pass
    # A run folder from before the marker (its config.yaml names it) is still this run's.
    _folder_with(tmp_path / "legacy", "config.yaml", b"run: {name: legacy}\n")
    with RunFolder(tmp_path, "legacy") as folder:
        folder.empty()
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"meow"
    assert not (tmp_path / "photos" / MARKER_FILE).exists()  # nothing was created in it
    # The names of what all runs of an output folder share are never run folders.
    for shared in ("mlartifacts", "mlflow.db", "sweeps"):
        with pytest.raises(RunFolderError, match=rf"{shared!r} is the name of what all runs of the output folder share"):
            with RunFolder(tmp_path, shared):
                pass


def test_a_killed_runs_mlflow_run_is_marked_failed_on_the_next_start(tmp_path, capsys):
    import mlflow

    from recfound.config import load_config
    from recfound.train.resume import plan_restart

    config = load_config(None, ["run.name=crashed", f"run.output_dir={tmp_path / 'runs'}"], check_paths=False)
    client = mlflow.MlflowClient(config.tracking_uri())
    orphan = client.create_run(client.create_experiment("recfound")).info.run_id  # RUNNING, its driver gone
    holder = _hold(tmp_path / "runs", "crashed", tmp_path / "ready")
    holder.kill()
    holder.wait(timeout=30)
    marker = tmp_path / "runs" / "crashed" / MARKER_FILE
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "mlflow_run_id": orphan}))
    with RunFolder(config.run.output_dir, config.run.name) as folder:
        assert plan_restart(config, folder, overwrite=False) is None  # no checkpoints: a fresh start
    assert client.get_run(orphan).info.status == "FAILED"
    printed = capsys.readouterr().out
    assert f"an earlier process of run 'crashed', pid {holder.pid} on host" in printed
    assert f"marked its MLflow run {orphan} FAILED" in printed
