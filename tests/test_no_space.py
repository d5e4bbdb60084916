"""A full disk is one line naming the device and the file: a real tmpfs that fills up (in a user and
mount namespace of its own, so no privileges are needed), and the forms a full disk takes further down
an error's chain (SQLite's own "database or disk is full", a Ray Train worker's ENOSPC as text)."""

from __future__ import annotations

import errno
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from recfound.no_space import full_disk_error, mount_point


def _sqlite_full_error(tmp_path: Path) -> sqlite3.OperationalError:
    """SQLite's own error when a database cannot grow (its page limit stands in for the disk)."""
    connection = sqlite3.connect(tmp_path / "store.db")
    connection.execute("PRAGMA max_page_count = 2")
    try:
        connection.execute("CREATE TABLE runs (payload TEXT)")
        for _ in range(100):
            connection.execute("INSERT INTO runs VALUES (?)", ("x" * 4000,))
    except sqlite3.OperationalError as error:
        return error
    finally:
        connection.close()
    raise AssertionError("SQLite did not fill up")


def test_sqlite_full_under_a_later_error_is_found(tmp_path):
    store = f"sqlite:///{tmp_path / 'store.db'}"
    try:
        try:
            raise _sqlite_full_error(tmp_path)
        except sqlite3.OperationalError as full:
            raise RuntimeError("(sqlite3.OperationalError) a later error of the store layer") from full
    except RuntimeError as error:
        found = full_disk_error(error, store_hint=store)
    assert found is not None and found.errno == errno.ENOSPC
    assert found.strerror == (f"no space left for the MLflow database (the MLflow store {store}): SQLite says "
                              "'database or disk is full'; free space on its disk")


def test_a_workers_enospc_as_text_names_the_file_and_its_mount(tmp_path):
    written = tmp_path / "runs" / "r" / "checkpoint_x" / "adapter.safetensors"
    worker_text = f"Training failed: [Errno 28] No space left on device: '{written}'"
    found = full_disk_error(RuntimeError(worker_text))
    mount = mount_point(tmp_path)
    assert found is not None and found.strerror.startswith(
        f"no space left on the device mounted at {mount} (writing {written}; ")
    assert full_disk_error(RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"))
    assert full_disk_error(ValueError("an unrelated error")) is None


def test_a_merge_onto_a_full_tmpfs_is_one_line_naming_the_device(tmp_path):
    """`recfound merge` writing its result onto a 4 KiB tmpfs: the write fails with ENOSPC, and
    the one error line names the mount and the file."""
    from test_merge import STEPS, perturb

    from recfound.model.state import save_adapter
    from recfound.train.manifest import write_manifest
    from test_model_tmole import tiny_adapter

    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux's unshare")
    run = tmp_path / "run"
    _, adapter = tiny_adapter(dtype="float32")
    save_adapter(adapter, run / "adapter_init.safetensors")
    for seed, (name, step) in enumerate(STEPS.items()):
        perturb(adapter, seed)
        save_adapter(adapter, run / name / "adapter.safetensors")
        (run / name / "progress.json").write_text(f'{{"step": {step}}}')
        write_manifest(run / name, rank=0, world_size=1)
    small = tmp_path / "small"
    small.mkdir()
    out = small / "merged.safetensors"
    recfound = Path(sys.executable).parent / "recfound"
    script = f'mount -t tmpfs -o size=4k tmpfs "{small}" || exit 99; exec "{recfound}" merge "{run}" --out "{out}"'
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    if done.returncode == 99 or "unshare failed" in done.stderr:
        pytest.skip(f"no user and mount namespaces here: {done.stderr.strip()[-200:]}")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"recfound: error: no space left on the device mounted at {small} (writing {out}; ")
    assert last.endswith("free space there, or choose a folder on a larger disk (e.g. --set run.output_dir=...)")
