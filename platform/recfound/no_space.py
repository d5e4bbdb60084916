"""A full disk said as such: 'no space left on the device mounted at M (writing P, N free)'.

A disk that fills up shows as an `OSError` ENOSPC somewhere down an error's chain (its cause, its
context, a Ray Train worker's failure), or as SQLite's "database or disk is full" from the MLflow store,
often under a later error that hides it. `full_disk_error` finds it and says which device and file.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from recfound.error_chain import error_chain

SQLITE_FULL = "database or disk is full"
# How ENOSPC reads as text: Python's OSError (as a Ray Train worker's failure shows it), Rust libraries'
# io::Error (tokenizers, safetensors).
NO_SPACE_TEXT = re.compile(r"No space left on device|os error 28|StorageFull")
ERRNO_PATH = re.compile(r"\[Errno 28\] No space left on device: '([^']+)'")


def full_disk_error(error: BaseException, store_hint: str | None = None) -> OSError | None:
    """A one-line OSError for the full disk behind `error`, or None when there is none. `store_hint`
    names the MLflow store, for SQLite's message (which names no file)."""
    for link in error_chain(error):
        if isinstance(link, OSError) and link.errno == errno.ENOSPC:
            return _no_space(link.filename)
        if NO_SPACE_TEXT.search(str(link)):
            named = ERRNO_PATH.search(str(link))
            return _no_space(named.group(1) if named else None)
        if SQLITE_FULL in str(link):
            where = f" (the MLflow store {store_hint})" if store_hint else " (the MLflow store)"
            return OSError(errno.ENOSPC, f"no space left for the MLflow database{where}: SQLite says "
                                         f"'{SQLITE_FULL}'; free space on its disk")
    return None


def _no_space(path: str | os.PathLike | None) -> OSError:
    if path is None:
        return OSError(errno.ENOSPC, "no space left on a device (the file was not named); free some space")
    try:
        mount = mount_point(Path(path))  # on this machine; a worker's file may be on another node's disk
        free = _megabytes(shutil.disk_usage(mount).free) if mount is not None else "?"
    except OSError:
        mount, free = None, "?"
    where = f"the device mounted at {mount}" if mount is not None else "its device"
    return OSError(errno.ENOSPC, f"no space left on {where} (writing {path}; {free} free now): free space there, "
                                 "or choose a folder on a larger disk (e.g. --set run.output_dir=...)")


def mount_point(path: Path) -> Path | None:
    """The mount point of the file system `path` (or its nearest existing parent) lives on."""
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None:
        return None
    device, current = existing.stat().st_dev, existing.resolve()
    while current.parent != current and current.parent.stat().st_dev == device:
        current = current.parent
    return current


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB"
