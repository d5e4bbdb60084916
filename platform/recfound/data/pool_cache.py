"""Token pools kept between runs: a task file tokenized once is read back, not tokenized again.

A sweep's trials, a resumed or resubmitted run and a rerun with other training settings all tokenize the
same task files with the same tokenizer; on a real corpus that is minutes per run. The cache holds each
pool as one Arrow IPC file (no pickle) under `$RECFOUND_CACHE/pools/` (default `~/.cache/recfound`), on the
driver's node, which is where pools are built and held (`recfound.data.pools`).

A pool's key is a SHA-256 over everything that decides its rows: this cache's format, the source of the
`recfound.data` package and of the task registry, the tokenizers library's version, the task's definition,
the token limits, the tokenizer's files, and the task file itself (its content on a local disk; its URI,
size and modification time in an object store, whose files are not downloaded just to be hashed: a file
rewritten with the same size within the store's time resolution, one second on S3, is not noticed). Any
change gives a new key, so a stale pool is not read: it is tokenized again. A file is named
`<key>-<SHA-256 of its bytes>.arrow`, written under a temporary name and renamed, and its bytes are
checked against its name when it is read; a file that fails the check or cannot be read is deleted and the
pool rebuilt. Temporary files a killed run left are removed after an hour, and pools no run used for 30
days (e.g. the keys of older code) after that. `RECFOUND_POOL_CACHE=0` turns the cache off; deleting the
folder is safe at any time.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

from recfound import storage
from recfound.data.atomic import atomic_write_bytes, file_sha256
from recfound.data.source_digest import source_digest
from recfound.data.streams import table_fingerprint
from recfound.data.tokenize import TokenLimits
from recfound.data.tokenizer import default_cache_dir
from recfound.tasks import Task

FORMAT = "2"
LEFTOVER_AGE_S = 3600.0  # a temporary file older than this belongs to a run that was killed while writing
UNUSED_AGE_S = 30 * 24 * 3600.0  # a pool no run read or wrote for this long goes (e.g. keys of older code)


def cache_folder() -> Path | None:
    """Where pools are kept, or None when `RECFOUND_POOL_CACHE=0` turns the cache off."""
    if os.environ.get("RECFOUND_POOL_CACHE", "1") == "0":
        return None
    return default_cache_dir() / "pools"


class PoolKeys:
    """The cache keys of one tokenizer and one set of limits (see module doc): what every key of a load shares
    is hashed once."""

    def __init__(self, tokenizer: storage.Location, limits: TokenLimits) -> None:
        import tokenizers

        digest = hashlib.sha256(f"format {FORMAT}\ntokenizers {tokenizers.__version__}\n{limits!r}\n".encode())
        digest.update(source_digest())  # the recfound.data package and the tasks decide a pool's rows
        for name in storage.list_names(tokenizer):
            if name.endswith(".json"):
                digest.update(name.encode() + b"\0" + storage.read_bytes(storage.join(tokenizer, name)))
        self._shared = digest.digest()

    def of(self, location: str, task: Task) -> str | None:
        """The key of task file `location`'s pool, or None when the file cannot be told apart from a rewrite
        of it (a store that gives no modification time): such a pool is not kept."""
        identity = _file_identity(location)
        if identity is None:
            return None
        return hashlib.sha256(self._shared + repr(task).encode() + b"\0" + identity).hexdigest()


def read_pool(folder: Path, key: str) -> tuple[pa.Table, str] | None:
    """(the pool kept under `key`, its fingerprint), or None when there is none; a file whose bytes do not
    match its name, or that cannot be read, is deleted."""
    for path in sorted(folder.glob(f"{key}-*.arrow")):
        try:
            with pa.memory_map(str(path)) as source:  # read once: hashed, then parsed from the same bytes
                data = source.read_buffer()
                if hashlib.sha256(data).hexdigest() == path.stem.rsplit("-", 1)[1]:  # the bytes it was written with
                    table = pa.ipc.open_file(data).read_all()
                    os.utime(path)  # used now: `remove_leftovers` keeps it
                    return table, table_fingerprint(table)
        except Exception:  # noqa: BLE001 - any damage costs a tokenizing, never the run
            pass
        path.unlink(missing_ok=True)
    return None


def write_pool(folder: Path, key: str, table: pa.Table) -> None:
    """Keep `table` under `key`, whole or not at all. A cache that cannot be written (a full or read-only disk)
    only costs the next run its tokenizing: one line, and the run goes on."""
    try:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        data = sink.getvalue().to_pybytes()
        atomic_write_bytes(folder / f"{key}-{hashlib.sha256(data).hexdigest()}.arrow", data)
    except Exception as error:  # noqa: BLE001 - see the docstring
        print(f"recfound: could not keep a token pool in {folder} ({error}); the next run tokenizes again",
              file=sys.stderr, flush=True)


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary files of writes that a killed run left behind (older than `LEFTOVER_AGE_S`) and
    the pools no run used for `UNUSED_AGE_S` (a reading run touches its pool)."""
    now = time.time()
    for pattern, age_s in ((".*.tmp", LEFTOVER_AGE_S), ("*.arrow", UNUSED_AGE_S)):
        for path in folder.glob(pattern):
            try:
                if path.stat().st_mtime < now - age_s:
                    path.unlink()
            except OSError:
                pass


def _file_identity(location: str) -> bytes | None:
    if storage.is_remote(location):
        stamp = storage.stamp(location)
        return None if stamp.endswith(":None") else f"{location}\0{stamp}".encode()
    return bytes.fromhex(file_sha256(location))
