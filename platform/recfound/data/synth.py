"""The deterministic synthetic RecFound corpus: `synthesize(out, seed, scale)` writes every task's splits.

One world (catalog + users, `synth_world`) is built from the seed; each task then draws its records
with its own generator seeded from (seed, task name), so tasks do not influence each other. Records
are unique per task across all splits (same prompt/query never lands in two splits).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable

from recfound.data.atomic import atomic_write_lines
from recfound.data.reader import SPLITS
from recfound.data.synth_embed import make_i2i, make_q2i, make_u2i
from recfound.data.synth_items import make_ave, make_ip, make_pm, make_prp
from recfound.data.synth_qr import make_qr
from recfound.data.synth_reviews import make_ag, make_ap, make_sa
from recfound.data.synth_users import make_sr, make_up
from recfound.data.synth_world import World, build_world
from recfound.tasks import Kind, Task, get_task

Maker = Callable[[World, random.Random], dict]

# task -> maker of one sample's fields (all but id, task and instruction), in registry order
MAKERS: dict[str, Maker] = {
    "U2I": make_u2i, "Q2I": make_q2i, "I2I": make_i2i, "QR": make_qr, "AVE": make_ave, "AG": make_ag,
    "SR": make_sr, "SA": make_sa, "UP": make_up, "AP": make_ap, "PRP": make_prp, "PM": make_pm, "IP": make_ip,
}

# Table 1 of the paper: task -> (train, val, test)
PAPER_SIZES: dict[str, tuple[int, int, int]] = {
    "U2I": (86_000, 3_500, 4_800), "Q2I": (40_000, 2_600, 4_000), "I2I": (83_680, 3_340, 4_800),
    "QR": (3_260, 500, 124), "AVE": (20_000, 500, 1_334), "AG": (20_000, 500, 1_332),
    "SR": (20_000, 500, 1_334), "SA": (20_000, 500, 1_334), "UP": (20_000, 500, 227),
    "AP": (15_000, 500, 1_334), "PRP": (20_000, 500, 1_333), "PM": (4_000, 500, 168), "IP": (15_000, 500, 266),
}
_PAPER_TRAIN_TOTAL = sum(sizes[0] for sizes in PAPER_SIZES.values())
TINY_EMBEDDING_TEST = 64  # test queries of each embedding task at the tiny scale


def _tiny(task: str, split: int) -> int:
    """About 2,000 train records in Table 1's proportions (at least 48 a task); 16 for val; 16 for test, but
    64 for the embedding tasks' test: a retrieval metric over 16 queries moves by +-0.1-0.2 from the queries
    drawn alone (docs/training.md), and 64 queries cost the demo's evaluation about a second."""
    if split == 0:
        return max(48, round(PAPER_SIZES[task][0] * 2_000 / _PAPER_TRAIN_TOTAL))
    return TINY_EMBEDDING_TEST if split == SPLITS.index("test") and get_task(task).kind is Kind.EMBEDDING else 16


def _small(task: str, split: int) -> int:
    """A twentieth of Table 1, at least 32."""
    return max(32, round(PAPER_SIZES[task][split] / 20))


def _paper(task: str, split: int) -> int:
    return PAPER_SIZES[task][split]


SCALES: dict[str, dict[str, dict[str, int]]] = {
    name: {split: {task: size(task, i) for task in PAPER_SIZES} for i, split in enumerate(SPLITS)}
    for name, size in (("tiny", _tiny), ("small", _small), ("paper", _paper))
}
# catalog size per scale: enough distinct items for the item-keyed tasks (IP needs one item per record)
CATALOG_ITEMS = {"tiny": 800, "small": 4_000, "paper": 24_000}


def synthesize(out: Path, seed: int, scale: str = "tiny") -> dict[str, dict[str, int]]:
    """Write `<out>/<split>/<TASK>.jsonl` for every split and task; returns counts[split][task]."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed scales: {', '.join(SCALES)}")
    sizes = SCALES[scale]
    world = build_world(seed, CATALOG_ITEMS[scale])
    counts: dict[str, dict[str, int]] = {split: {} for split in SPLITS}
    for name, maker in MAKERS.items():
        task = get_task(name)
        rng = random.Random(f"recfound-synth/{seed}/{name}")
        records = _draw_unique(task, maker, world, rng, [sizes[split][name] for split in SPLITS])
        for split, lines in zip(SPLITS, records):
            atomic_write_lines(Path(out) / split / f"{name}.jsonl", lines)
            counts[split][name] = len(lines)
    return counts


def _draw_unique(task: Task, maker: Maker, world: World, rng: random.Random, sizes: list[int]) -> list[list[str]]:
    """JSON lines for each split, no sample drawn twice (by its prompt/query) across all of them."""
    seen: set[str] = set()
    budget = 20 * sum(sizes) + 1_000
    splits: list[list[str]] = []
    for split, size in zip(SPLITS, sizes):
        lines: list[str] = []
        while len(lines) < size:
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"{task.name}: cannot draw {sum(sizes)} distinct records from this catalog")
            fields = maker(world, rng)
            key = _identity(task, fields)
            if key in seen:
                continue
            seen.add(key)
            record = {"id": f"{task.name.lower()}-{split}-{len(lines)}", "task": task.name,
                      "instruction": rng.choice(task.instructions), **fields}
            lines.append(json.dumps(record, ensure_ascii=False))
        splits.append(lines)
    return splits


def _identity(task: Task, fields: dict) -> str:
    """What makes two samples the same: the prompt (generative) or the query and positive (embedding)."""
    if task.kind is Kind.EMBEDDING:
        return f"{fields['query']}\x00{fields['positive']}"
    return fields["input"]
