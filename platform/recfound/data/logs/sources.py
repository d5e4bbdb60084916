"""The sources `recfound data build` reads, and which tasks each cannot yield (with the reason)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from recfound.data.logs.amazon import read_amazon
from recfound.data.logs.movielens import read_movielens
from recfound.data.logs.source import Source
from recfound.data.logs.textio import Notes

SOURCES = ("movielens", "amazon")
NEVER = {
    "QR": "interaction logs hold no dialogues to rewrite",
    "AG": "interaction logs hold no questions with answers",
    "AP": "interaction logs hold no questions",
    "PM": "one catalog only: no second shop's listing of the same product to match against",
}


def read_source(name: str, path: Path, meta: Path | None, encoding: str | None, scratch: Path,
                notes: Notes) -> Source:
    """Read one source: a MovieLens folder, or Amazon reviews plus their item metadata."""
    if name == "movielens":
        if meta is not None:
            raise ValueError("--meta is for --source amazon; MovieLens folders hold their own movie file")
        source = read_movielens(path, notes, encoding)
    elif name == "amazon":
        if meta is None:
            raise ValueError("--source amazon needs --meta META.jsonl[.gz], the item metadata file")
        if encoding is not None:
            raise ValueError("--encoding is for MovieLens files; JSON lines files are always UTF-8")
        source = read_amazon(path, meta, scratch, notes)
    else:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)}")
    _warn_repeated_items(source, meta.name if meta else f"{path.name}'s movie file", notes)
    return source


def _warn_repeated_items(source: Source, where: str, notes: Notes) -> None:
    """Items are looked up by id, first line first: say when an id has more than one line."""
    ids = source.items["id"]
    repeated = len(ids) - pc.count_distinct(ids).as_py()
    if repeated:
        counts = pc.value_counts(ids)
        example = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        notes.warn(f"{where}: {repeated:,} item line(s) repeat an earlier item's id (e.g. {example}); the "
                   "first line of each id is used")


def unavailable(source: Source) -> dict[str, str]:
    """Task -> why this source cannot yield it."""
    reasons = dict(NEVER)
    if source.name == "movielens":
        reasons["SA"] = "MovieLens has ratings but no review texts"
        reasons["AVE"] = "MovieLens has no listing text to find attribute values in (a title and genres only)"
    if source.users is None:
        reasons["UAP"] = "no user attributes (only ML-100K's u.user gives ages)"
    return reasons
