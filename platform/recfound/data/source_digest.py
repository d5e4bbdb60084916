"""A digest of the recfound source files that decide some derived data (cached pools, a generated corpus):
when any of them changes, what was derived from the old code is made again."""

from __future__ import annotations

import hashlib
from pathlib import Path


def source_digest(data_modules: str = "*.py") -> bytes:
    """SHA-256 over the `recfound.data` modules matching `data_modules` and the task registry (name and
    bytes of each file, in name order)."""
    import recfound.data
    import recfound.tasks

    digest = hashlib.sha256()
    for path in [*sorted(Path(recfound.data.__file__).parent.glob(data_modules)), Path(recfound.tasks.__file__)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()
