"""A run's folder (`run.output_dir/run.name`): what may be named so, who may write into it, what may be deleted.

- A run name is one safe path component: no `.`/`..`, no separators, at most `NAME_MAX` characters.
- The folder holds a marker file, `.recfound-run`. Only a folder with the marker of that run name (or,
  from before the marker, a `config.yaml` of that run name) is ever emptied by `--overwrite`, and
  then everything but the marker goes: never the folder's parent or siblings.
- The marker is also the run's lock: the driver holds an exclusive `flock` on it for the whole run,
  so a second process of the same run fails at once, naming the holder (host, pid, start time). The
  kernel drops the lock when its process dies, however it dies: a killed run leaves a marker that
  says "running" but no lock, which the next start reports (and marks that run's MLflow run failed).
- On an object store (`run.output_dir: s3://...`) the run's files live in the bucket and the folder
  here (`path`) is a local staging folder under `$RECFOUND_CACHE/staging` (default
  ~/.cache/recfound/staging). It holds the lock (a bucket has no locks; drivers of a cluster's jobs all
  run on its head, so a lock there covers them) and the files made locally before they are uploaded.
  The marker's record is mirrored into the bucket, so a driver on another machine reads what the last
  process of the run left, and a run marked running by another machine is refused.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from recfound import storage
from recfound.data.tokenizer import default_cache_dir
from recfound.run_layout import CONFIG_FILE

NAME_MAX = 100
NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}"
NAME_RULE = f"letters, digits, '.', '_' and '-', starting with a letter or digit, at most {NAME_MAX} characters"
MARKER_FILE = ".recfound-run"
CARRIED_KEYS = ("mlflow_run_id", "data_hash")  # kept from one process of a run to the next
LEGACY_MARKER = CONFIG_FILE
# What else lives in an output folder beside the run folders (the embedded MLflow store, its artifacts,
# sweeps): a run of one of these names would write into, and with --overwrite empty, what all runs share.
RESERVED_NAMES = ("mlflow.db", "mlartifacts", "sweeps")


class RunFolderError(OSError):
    """The run folder cannot be used: another process holds it, or it is not a run folder of that name."""


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def describe_holder(holder: dict[str, Any]) -> str:
    """'pid 123 on host h (started 2026-12-01T18:00:00+00:00)' from a marker's record."""
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


class RunFolder:
    """The locked folder of one run; use as a context manager (`with RunFolder(...) as folder:`)."""

    def __init__(self, output_dir: Path | str, name: str) -> None:
        self.location = storage.join(output_dir, name)  # where the run's files live
        self.remote = storage.is_remote(output_dir)
        self.path = staging_folder(self.location, name) if self.remote else Path(output_dir) / name  # local
        self.name = name
        self.last: dict[str, Any] = {}  # the record the earlier process of this run left (empty: none)
        self.previous: dict[str, Any] | None = None  # that record, when that process was killed
        self._handle: Any = None
        self._record: dict[str, Any] = {}
        self._mirrored = False  # the record of this process reached the bucket

    # --- lock ---------------------------------------------------------------------------------------

    def __enter__(self) -> RunFolder:
        import fcntl

        self._refuse_foreign_folder()  # before anything is created in it
        self.path.mkdir(parents=True, exist_ok=True)
        marker = self.path / MARKER_FILE
        # Read-write without truncating (the record stays until the lock is ours) and without append mode
        # (which would ignore the seek of every rewrite).
        handle = os.fdopen(os.open(marker, os.O_RDWR | os.O_CREAT, 0o644), "r+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read_record(marker)
                raise RunFolderError(f"run {self.name!r} is in use by {describe_holder(holder)}: {self.location} has "
                                     "one writer at a time; wait for it to end, or choose another run.name") from None
            raise RunFolderError(f"{marker}: cannot lock the run folder ({error.strerror}); the file system must "
                                 "support flock (a local disk or NFSv4)") from None
        self._handle = handle
        try:
            self._refuse_foreign_folder()  # again, now that no other process can change the marker
            self.last = self._read_marker()
            if self.last.get("state") == "running":
                self._refuse_a_live_run_elsewhere()
                self.previous = self.last
            self._record = {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                            "started": _now(), "state": "running"}
            # The run's MLflow run and data, until this process starts another run on other data.
            self._record.update({key: self.last[key] for key in CARRIED_KEYS if key in self.last})
            self._write()
        except BaseException:
            self._handle = None
            handle.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def release(self) -> None:
        """Record that this process ended and drop the lock (idempotent)."""
        if self._handle is None:
            return
        try:
            self._record.update(state="ended", ended=_now())
            self._write()
        finally:
            self._handle.close()  # closing the file drops the flock
            self._handle = None

    def note(self, **values: Any) -> None:
        """Add values (e.g. the MLflow run id) to the marker, for the next process of this run to read."""
        self._record.update(values)
        self._write()

    def _write(self) -> None:
        """Overwrite the record in place, never leaving the file empty (a reader falls back to config.yaml
        while it holds a mix of the old and new record)."""
        self._handle.seek(0)
        self._handle.write(json.dumps(self._record) + "\n")
        self._handle.truncate()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        if self.remote:
            self._mirror()

    def _mirror(self) -> None:
        """The record, into the bucket. A store that fails at the start stops the run there; later it is
        reported and never hides the run's own outcome (this runs on the way out of every run)."""
        marker = storage.join(self.location, MARKER_FILE)
        if self._record.get("state") == "running" and not self._mirrored:
            storage.write_bytes(marker, json.dumps(self._record).encode() + b"\n")
            self._mirrored = True
            return
        try:
            storage.write_bytes(marker, json.dumps(self._record).encode() + b"\n")
        except OSError as error:
            print(f"warning: the run's marker was not updated in the bucket: {error}", flush=True)

    def _refuse_a_live_run_elsewhere(self) -> None:
        """A bucket's run marked running by another machine may be running there (no lock reaches it)."""
        if self.remote and self.last.get("host") not in (None, socket.gethostname()):
            marker = storage.join(self.location, MARKER_FILE)
            raise RunFolderError(f"run {self.name!r} is marked running by {describe_holder(self.last)}, another "
                                 f"machine, which this one cannot check; if that process is gone, delete {marker} "
                                 "(its checkpoints stay) and run again")

    def _read_marker(self) -> dict[str, Any]:
        """The record the last process of the run left (in the bucket for a remote run)."""
        if not self.remote:
            return _read_record(self.path / MARKER_FILE)
        try:
            return _parse_record(storage.read_text(storage.join(self.location, MARKER_FILE)))
        except FileNotFoundError:
            return {}

    def publish(self, name: str) -> Path:
        """The file `name` this process wrote into the local folder, uploaded to the bucket for a run on one
        (a local run's folder is the run folder itself); its local path."""
        local = self.path / name
        if self.remote:
            storage.upload(local, storage.join(self.location, name))
        return local

    def local_copy(self, location: str) -> Path:
        """A local copy of a file of the run folder (for a local run, the file itself): an object-store run's
        file is downloaded into the staging folder, at the same relative path."""
        if not self.remote:
            return Path(location)
        relative = location[len(self.location):].strip("/")
        return storage.download(location, self.path / relative)

    # --- overwrite ----------------------------------------------------------------------------------

    def _refuse_foreign_folder(self) -> None:
        """A non-empty folder that is not a run folder of this name is never written into."""
        if self.name in RESERVED_NAMES:
            raise RunFolderError(f"{self.location}: {self.name!r} is the name of what all runs of the output folder "
                                 f"share ({', '.join(RESERVED_NAMES)}); choose another run.name")
        if storage.is_file(self.location):
            raise RunFolderError(f"{self.location}: exists and is not a folder; choose another run.name or "
                                 "run.output_dir")
        owner = self._owner()
        if owner is None and any(name != MARKER_FILE for name in storage.list_names(self.location)):
            held = f"no {MARKER_FILE} or {LEGACY_MARKER} names it"
        elif owner is not None and owner != self.name:
            held = f"it is the folder of run {owner!r}"
        else:
            return
        raise RunFolderError(f"{self.location}: exists and is not the folder of a run named {self.name!r} ({held}); "
                             "choose another run.name or run.output_dir, or move it away")

    def _owner(self) -> str | None:
        """The run name the folder's marker gives, else (an older run, or a marker being rewritten) the
        one its config.yaml gives, else None."""
        name = self._read_marker().get("name")
        if isinstance(name, str):
            return name
        import yaml

        try:
            saved = yaml.safe_load(storage.read_text(storage.join(self.location, LEGACY_MARKER)))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        run = saved.get("run") if isinstance(saved, dict) else None
        return run.get("name") if isinstance(run, dict) and isinstance(run.get("name"), str) else None

    def empty(self) -> None:
        """Delete everything in the folder but the marker (the caller holds the lock: `--overwrite`)."""
        if self._handle is None:
            raise RunFolderError(f"{self.location}: emptied without holding its lock")
        folders = [self.location, str(self.path)] if self.remote else [self.location]
        for folder in folders:
            for name in storage.list_names(folder):
                if name != MARKER_FILE:
                    storage.delete(storage.join(folder, name))


def staging_folder(location: str, name: str) -> Path:
    """The local folder of a run whose files live on an object store (one per run URI)."""
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    return default_cache_dir() / "staging" / digest / name


def _read_record(marker: Path) -> dict[str, Any]:
    try:
        return _parse_record(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return {}


def _parse_record(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
