"""A checkpoint folder counts only when complete: every rank's manifest is there and every file matches it.

Each rank writes its part of a checkpoint into a folder of its own, and writes `manifest-rank<R>.json`
last: the size of every file of its part (and the SHA-256 of the files recfound reads itself), and the
number of ranks. Ray Train then copies
the ranks' parts into one checkpoint folder of the run. A disk that fills up, or a process killed,
during that copy leaves a folder with missing or short files, or without some rank's manifest;
`checkpoint_problem` says so, and merge, evaluation and `recfound eval RUN:final` skip such a folder
with a warning naming it. Sizes are checked for every file and hashes for the files recfound reads
itself (the adapter, progress and scheduler state); DeepSpeed's `zero/` files, which only a resume
reads (from a checkpoint Ray Train registered, i.e. one every rank reported whole), by size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recfound.data.atomic import atomic_write_bytes

MANIFEST_PREFIX = "manifest-rank"
HASHED_ON_USE = ("adapter.safetensors", "progress.json", "scheduler.json")


def write_manifest(folder: Path, rank: int, world_size: int) -> None:
    """Record every file this rank wrote into `folder` (call it last): its size, and the hash of those
    recfound reads itself (hashing the optimizer states, only ever checked by size, would cost seconds)."""
    files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size,
                                                   "sha256": _sha256(path) if path.name in HASHED_ON_USE else ""}
             for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(MANIFEST_PREFIX)}
    record = {"rank": rank, "world_size": world_size, "files": files}
    atomic_write_bytes(folder / f"{MANIFEST_PREFIX}{rank}.json", json.dumps(record, indent=1).encode())


def checkpoint_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint (missing manifest, missing or changed file), or None."""
    manifests = _manifests(folder)
    if isinstance(manifests, str):
        return manifests
    for rank, manifest in sorted(manifests.items()):
        for name, expected in manifest["files"].items():
            path = folder / name
            if not path.is_file():
                return f"{name} (of rank {rank}) is missing"
            if path.stat().st_size != expected["size"]:
                return f"{name} has {path.stat().st_size} bytes, not the {expected['size']} written"
            if Path(name).name in HASHED_ON_USE and _sha256(path) != expected["sha256"]:
                return f"{name} is not the file written (its SHA-256 differs)"
    return None


def complete_checkpoints(folders: list[Path]) -> list[Path]:
    """The complete ones of `folders`, in order; a warning line for each one left out."""
    complete = []
    for folder in folders:
        problem = checkpoint_problem(folder)
        if problem is None:
            complete.append(folder)
        else:
            print(f"warning: skipping the incomplete checkpoint {folder}: {problem}", flush=True)
    return complete


def _manifests(folder: Path) -> dict[int, dict[str, Any]] | str:
    """Every rank's manifest by rank, or what is wrong with them."""
    found: dict[int, dict[str, Any]] = {}
    for path in folder.glob(f"{MANIFEST_PREFIX}*.json"):
        manifest = _read_manifest(path)
        if manifest is None:
            return f"{path.name} is unreadable (cut short?)"
        found[manifest["rank"]] = manifest
    if not found:
        return f"no {MANIFEST_PREFIX}*.json (the checkpoint was never completed, or predates manifests)"
    world_size = next(iter(found.values()))["world_size"]
    missing = sorted(set(range(world_size)) - set(found))
    return f"the manifests of rank(s) {', '.join(map(str, missing))} are missing" if missing else found


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    well_formed = (isinstance(manifest, dict) and isinstance(manifest.get("rank"), int)
                   and isinstance(manifest.get("world_size"), int) and isinstance(manifest.get("files"), dict)
                   and all(isinstance(entry, dict) and isinstance(entry.get("size"), int)
                           and isinstance(entry.get("sha256"), str) for entry in manifest["files"].values()))
    return manifest if well_formed else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
