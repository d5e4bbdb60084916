"""Each rank's manifest of its part of a checkpoint, written last (what makes a checkpoint count as complete).

Each rank writes its part of a checkpoint into a folder of its own, and writes `manifest-rank<R>.json`
last: the size of every file of its part (and the SHA-256 of the files recfound reads itself), and the
number of ranks. Ray Train then copies
the ranks' parts into one checkpoint folder of the run. A disk that fills up, or a process killed,
during that copy leaves a folder with missing or short files, or without some rank's manifest;
`recfound.run_layout.checkpoint_problem` says so, and the one checkpoint finder (`RunLayout.checkpoints`)
skips such a folder with a warning naming it. Sizes are checked for every file and hashes for the files
recfound reads itself (the adapter, progress and scheduler state); DeepSpeed's `zero/` files, which only a resume
reads (from a checkpoint Ray Train registered, i.e. one every rank reported whole), by size.
"""

from __future__ import annotations

import json
from pathlib import Path

from recfound import storage
from recfound.data.atomic import atomic_write_bytes, file_sha256
from recfound.run_layout import HASHED_ON_USE, MANIFEST_PREFIX


def write_manifest(folder: Path, rank: int, world_size: int) -> None:
    """Record every file this rank wrote into `folder` (call it last): its size, and the hash of those
    recfound reads itself (hashing the optimizer states, only ever checked by size, would cost seconds)."""
    files = {path.relative_to(folder).as_posix(): {"size": path.stat().st_size,
                                                   "sha256": file_sha256(path) if path.name in HASHED_ON_USE else ""}
             for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.startswith(MANIFEST_PREFIX)}
    record = {"rank": rank, "world_size": world_size, "files": files}
    atomic_write_bytes(folder / f"{MANIFEST_PREFIX}{rank}.json", json.dumps(record, indent=1).encode())


def written_by(folder: storage.Location) -> int:
    """The number of ranks that wrote a checkpoint folder (a local path or a URI), from rank 0's manifest."""
    return int(json.loads(storage.read_text(storage.join(folder, f"{MANIFEST_PREFIX}0.json")))["world_size"])
