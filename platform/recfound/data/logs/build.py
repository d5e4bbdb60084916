"""`recfound data build`: interaction logs -> `<out>/<split>/<TASK>.jsonl`, tasks.yaml, items.jsonl and the
split itself (splits/interactions.parquet, splits/targets.parquet), written into a staging folder that
replaces `out` only when every step succeeded."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recfound.data.atomic import atomic_folder, atomic_write_bytes
from recfound.data.logs.attr_tasks import build_attribute_tasks
from recfound.data.logs.context import Context
from recfound.data.logs.item_tasks import build_item_tasks
from recfound.data.logs.report import BuildReport
from recfound.data.logs.review_tasks import build_review_tasks
from recfound.data.logs.seq_tasks import build_sequence_tasks
from recfound.data.logs.settings import MIN_INTERACTIONS, Settings
from recfound.data.logs.sources import read_source, unavailable
from recfound.data.logs.split import Sequences, SplitCounts, split_source
from recfound.data.logs.tasks_file import AUX_TASKS, write_tasks_file
from recfound.data.logs.textio import Notes
from recfound.data.logs.user_tasks import build_user_tasks
from recfound.data.logs.writer import TaskWriter
from recfound.data.reader import SPLITS

MARKER = "build.json"  # written last; an output folder holding it may be replaced by the next build
BUILDERS = (build_sequence_tasks, build_user_tasks, build_item_tasks, build_attribute_tasks, build_review_tasks)


def nothing_to_build(path: Path, counts: SplitCounts, min_interactions: int) -> str:
    """Why a build kept no user, and what to change."""
    if counts.events_read and counts.events_without_item == counts.events_read:
        return (f"{path}: none of its {counts.events_read:,} events' items has metadata with a title; nothing to "
                "build: check that the metadata (or movie) file belongs to these events (e.g. Amazon 2023 reviews "
                "with 2023 metadata)")
    lower = f" or lower --min-interactions (at least {MIN_INTERACTIONS})" if min_interactions > MIN_INTERACTIONS else ""
    return (f"{path}: no user has {min_interactions} distinct items with metadata ({counts.events_read:,} events "
            f"read, {counts.events_without_item:,} without metadata); nothing to build: add interactions{lower}")


def build_logs(source_name: str, path: Path, out: Path, settings: Settings = Settings(), meta: Path | None = None,
               encoding: str | None = None) -> BuildReport:
    """Build every task the source allows into `out` (replaced whole on success; untouched on failure)."""
    started, notes = time.perf_counter(), Notes()
    with atomic_folder(out, MARKER) as staging:
        scratch = staging / ".scratch"
        scratch.mkdir()
        source = read_source(source_name, Path(path), meta and Path(meta), encoding, scratch, notes)
        seq, counts = split_source(source, settings.min_interactions)
        if not counts.users:
            raise ValueError(nothing_to_build(path, counts, settings.min_interactions))
        writer = TaskWriter(staging)
        context = Context(source, seq, settings, writer)
        for builder in BUILDERS:
            builder(context)
        shutil.rmtree(scratch)
        auxiliary = [name for name in AUX_TASKS if any(name in writer.counts.get(s, {}) for s in SPLITS)]
        write_tasks_file(staging, auxiliary)
        write_items(staging / "items.jsonl", context)
        write_interactions(staging / "splits" / "interactions.parquet", seq)
        writer.write_targets(staging / "splits" / "targets.parquet")
        report = BuildReport(
            source_name, source.layout, settings, counts,
            records={split: dict(writer.counts.get(split, {})) for split in SPLITS},
            skipped={name: dict(reasons) for name, reasons in context.skipped.items()},
            unavailable=unavailable(source), auxiliary=auxiliary, warnings=notes.warnings, notes=notes.notes,
            seconds=round(time.perf_counter() - started, 3))
        atomic_write_bytes(staging / MARKER, json.dumps(report.to_dict(), indent=2).encode())
    return report


def write_items(path: Path, context: Context) -> None:
    """items.jsonl: every catalog item's id and card (the text U2I and I2I records use for it)."""
    table = pa.table({"id": context.seq.catalog["id"], "card": context.cards})
    path.write_text(table.to_pandas().to_json(orient="records", lines=True, force_ascii=False), encoding="utf-8")


def write_interactions(path: Path, seq: Sequences) -> None:
    """The split itself, one row per kept event in sequence order: user, item, timestamp, rating, position
    (0-based in the user's sequence) and split (train, val, test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rating = pa.array(seq.rating.astype(np.float32), mask=np.isnan(seq.rating))
    pq.write_table(pa.table({
        "user": seq.user_ids.take(pa.array(seq.user)), "item": seq.catalog["id"].take(pa.array(seq.item)),
        "timestamp": pa.array(seq.time, pa.timestamp("ms")), "rating": rating,
        "position": pa.array(seq.position), "split": seq.split_names().dictionary_encode()}), path)
