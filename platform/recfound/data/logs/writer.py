"""Records appended to `<root>/<split>/<TASK>.jsonl` a chunk at a time (pandas' C JSON writer), counted."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class TaskWriter:
    """Writes each task's records per split in chunks; a file is created with its first record."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counts: dict[str, dict[str, int]] = defaultdict(dict)
        self.targets: list[pa.Table] = []

    def write(self, task: str, split: str, columns: dict[str, pa.Array]) -> None:
        """Append records: `columns` holds `id` and the kind's fields, in record order."""
        count = len(columns["id"])
        if not count:
            return
        table = pa.table({"task": pa.repeat(task, count), **columns})
        path = self.root / split / f"{task}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(table.to_pandas().to_json(orient="records", lines=True, force_ascii=False))
        self.counts[split][task] = self.counts[split].get(task, 0) + count

    def target(self, task: str, split: str, ids: pa.Array, users: pa.Array, items: pa.Array) -> None:
        """Note the item (and user) that records of a ranking task are about, for full-catalog evaluation."""
        self.targets.append(pa.table({"task": pa.repeat(task, len(ids)), "split": pa.repeat(split, len(ids)),
                                      "id": ids, "user": users, "item": items}))

    def write_targets(self, path: Path) -> None:
        schema = pa.schema([(name, pa.string()) for name in ("task", "split", "id", "user", "item")])
        pq.write_table(pa.concat_tables([t.cast(schema) for t in self.targets]) if self.targets
                       else schema.empty_table(), path)
