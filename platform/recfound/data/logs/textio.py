"""Raw input files line by line (plain or gzipped), for the slow checks that name file:line:field, and
the notes a build collects (warnings and facts worth telling the user, each said once)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when its name ends in .gz."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line ending) for every line of the file."""
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            yield number, raw.rstrip(b"\r\n")


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
