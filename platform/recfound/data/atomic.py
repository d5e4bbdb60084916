"""Write files so that a reader never sees half of one: a temporary name in the same folder, then rename."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically (the folder is created if needed). The bytes reach the disk
    before the rename, so a crash or power cut leaves the old file or the whole new one, never an empty one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as handle:  # plain open: the usual umask permissions, unlike mkstemp's 0600
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename in (None, str(tmp)):  # no file (e.g. ENOSPC), or our hidden one: name the one being written
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path | str) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_lines(path: Path | str, lines: Iterable[str]) -> None:
    """Write text lines (each gets a trailing newline) to `path` atomically, as UTF-8."""
    atomic_write_bytes(path, "".join(f"{line}\n" for line in lines).encode("utf-8"))


def check_replaceable(out: Path, marker: str) -> None:
    """FileExistsError unless `out` is missing, an empty folder, or a folder holding `marker` (what
    `atomic_folder` may replace): a command checks this before its long work, not after."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise FileExistsError(f"{out}: exists and is not a folder written by this command (no {marker}); "
                              "choose another path or remove it first")


@contextmanager
def atomic_folder(out: Path | str, marker: str) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it replaces `out` whole, on error it is removed.

    An existing `out` is only replaced when it is empty or holds `marker` (a file every earlier
    result of the same kind has, e.g. tokenizer.json), so a mistyped path never deletes other data.
    """
    out = Path(out)
    if out.name in ("", ".."):  # "." and "a/..": no name to stage beside
        out = out.resolve()
    check_replaceable(out, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()  # plain mkdir: the usual umask permissions, unlike mkdtemp's 0700
    try:
        yield staging
        _usual_permissions(staging, staging.stat().st_mode & 0o777)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _usual_permissions(folder: Path, dir_mode: int) -> None:
    """Give everything under `folder` the modes plain mkdir and open give (`dir_mode`, and it without the
    x bits for files): some writers stage through mkstemp, whose files are 0600."""
    for root, dirs, files in os.walk(folder):
        for name, mode in [*((d, dir_mode) for d in dirs), *((f, dir_mode & 0o666) for f in files)]:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, mode)
