"""Raw input files line by line (plain or gzipped), for the slow checks that name file:line:field, and
the notes a build collects (warnings and facts worth telling the user, each said once)."""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line ending) for every line of the file."""
    from recfound.data.reader import RecordError

    with open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                yield number, raw.rstrip(b"\r\n")
        except gzip.BadGzipFile:
            raise RecordError(path, None, "<file>", "named .gz but not gzip data: rename it without .gz") from None
        except (EOFError, zlib.error) as err:
            raise RecordError(path, None, "<file>", f"a damaged or unfinished gzip file ({err}): check it with "
                              "gzip -t, and download or compress it again") from None


@dataclass
class Notes:
    """Warnings and notes of one build, in the order they arose, each text once."""

    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
