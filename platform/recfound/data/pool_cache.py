"""Token pools kept between runs: a task file tokenized once is read back, not tokenized again.

A sweep's trials, a resumed or resubmitted run and a rerun with other training settings all tokenize the
same task files with the same tokenizer; on a real corpus that is minutes per run. The cache holds each
pool as one Arrow IPC file (no pickle) under `$RECFOUND_CACHE/pools/` (default `~/.cache/recfound`), on the
driver's node, which is where pools are built and held (`recfound.data.pools`).

A pool's key is a SHA-256 over everything that decides its rows: this cache's format, the source of the
modules that read, check and tokenize records, the task's definition, the token limits, the tokenizer's
files, and the task file itself (its content on a local disk; its URI, size and modification time in an
object store, whose files are not downloaded just to be hashed). Any change gives a new key, so a stale
pool is never read: it is tokenized again. A file is written whole or not at all (a temporary name, then
a rename) and carries its pool's fingerprint, checked when it is read; a file that fails the check is
deleted and the pool rebuilt. `RECFOUND_POOL_CACHE=0` turns the cache off; deleting the folder is safe
at any time.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import pyarrow as pa

from recfound import storage
from recfound.data.streams import table_fingerprint
from recfound.data.tokenize import TokenLimits
from recfound.data.tokenizer import default_cache_dir
from recfound.tasks import Task

FORMAT = "1"
FINGERPRINT_KEY = b"recfound.pool.fingerprint"
# The modules whose code decides a pool's rows: an edit to any of them (a checkout, an upgrade) is a new key.
POOL_MAKERS = ("recfound.data.reader", "recfound.data.task_source", "recfound.data.blocks",
               "recfound.data.tokenize", "recfound.data.pools")
_CHUNK = 1 << 20


def cache_folder() -> Path | None:
    """Where pools are kept, or None when `RECFOUND_POOL_CACHE=0` turns the cache off."""
    if os.environ.get("RECFOUND_POOL_CACHE", "1") == "0":
        return None
    return default_cache_dir() / "pools"


def pool_key(location: str, task: Task, tokenizer: storage.Location, limits: TokenLimits) -> str:
    """The cache key of the pool of task file `location` (see module doc)."""
    digest = hashlib.sha256(f"format {FORMAT}\n{task!r}\n{limits!r}\n".encode())
    digest.update(_code_digest())
    for name in storage.list_names(tokenizer):
        if name.endswith(".json"):
            digest.update(name.encode() + b"\0" + storage.read_bytes(storage.join(tokenizer, name)))
    digest.update(_file_identity(location))
    return digest.hexdigest()


def read_pool(path: Path) -> tuple[pa.Table, str] | None:
    """(the pool kept in `path`, its fingerprint), or None when there is none or it fails its fingerprint
    (then the file is deleted)."""
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (FileNotFoundError, pa.ArrowInvalid):
        return None
    metadata = dict(table.schema.metadata or {})
    fingerprint = table_fingerprint(table)
    if metadata.pop(FINGERPRINT_KEY, b"").decode() != fingerprint:
        path.unlink(missing_ok=True)
        return None
    return table.replace_schema_metadata(metadata or None), fingerprint


def write_pool(path: Path, table: pa.Table, fingerprint: str) -> None:
    """Keep `table` in `path`, whole or not at all. A cache that cannot be written (a full or read-only disk)
    only costs the next run its tokenizing: the run goes on."""
    metadata = {**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode()}
    kept = table.replace_schema_metadata(metadata)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp",
                                         delete=False) as handle:
            temporary = Path(handle.name)
        try:
            with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, kept.schema) as writer:
                writer.write_table(kept)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as error:
        print(f"recfound: could not keep a token pool in {path.parent} ({error}); the next run tokenizes again",
              file=sys.stderr, flush=True)


def _code_digest() -> bytes:
    import importlib

    digest = hashlib.sha256()
    for name in POOL_MAKERS:
        digest.update(Path(importlib.import_module(name).__file__).read_bytes())
    return digest.digest()


def _file_identity(location: str) -> bytes:
    if storage.is_remote(location):
        return f"{location}\0{storage.stamp(location)}".encode()
    digest = hashlib.sha256()
    with open(location, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.digest()
