"""Tasks about a user's next (or hidden) item, one record per chosen event: U2I, SR, MIM, PREF, WI, RP.

A record about event e shows only events of the same user before e (MIM: up to e), so a train record
never shows a validation or test event and a validation record never shows the test event. Wrong
options and negatives are items the user never touched. Records of a user who touched nearly the whole
catalog (fewer untouched items than needed) are left out and counted.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.context import Context
from recfound.data.logs.sampling import rows_of
from recfound.data.logs.split import TRAIN, VAL, TEST
from recfound.data.logs.text import (
    concat, event_lines, history, ids, numbered, option_lists, take, with_answer, wordings,
)
from recfound.data.logs.wordings import WORDINGS
from recfound.data.reader import SPLITS

MASK = "[masked]"
Maker = Callable[[Context, np.ndarray, int, np.random.Generator], tuple[np.ndarray, dict[str, pa.Array]]]
RANKED = ("U2I", "SR")  # tasks whose target item is noted for full-catalog evaluation
UNTOUCHED = "the user left too few items of the catalog untouched"


def _history_text(ctx: Context, rows: np.ndarray, rated: bool = False) -> pa.Array:
    return numbered(event_lines(ctx.seq, ctx.titles, history(ctx.seq, rows, ctx.settings.history), rated))


def _untouched(ctx: Context, rows: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, their k untouched items each)."""
    items, ok = ctx.untouched.sample(ctx.seq.user[rows], k, rng)
    return rows[ok], items[ok]


def _u2i(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    rows, negatives = _untouched(ctx, rows, ctx.settings.negatives, rng)
    return rows, {"query": _history_text(ctx, rows), "positive": take(ctx.cards, ctx.seq.item[rows]),
                  "negatives": option_lists(ctx.cards, negatives)}


def _choice(ctx: Context, rows: np.ndarray, answer: np.ndarray, wrong: int, rng: np.random.Generator,
            text: pa.Array | None = None) -> tuple[np.ndarray, dict]:
    """Option records: `answer` (an item per row) among `wrong` untouched items, after `text` (default:
    the history before each row)."""
    items, ok = ctx.untouched.sample(ctx.seq.user[rows], wrong, rng)
    rows, answer = rows[ok], answer[ok]
    options, letters = with_answer(items[ok], answer, rng)
    text = _history_text(ctx, rows) if text is None else text.filter(pa.array(ok))
    return rows, {"input": text, "options": option_lists(ctx.cards, options), "output": letters}


def _sr(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    return _choice(ctx, rows, ctx.seq.item[rows], ctx.settings.options - 1, rng)


def _pref(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    return _choice(ctx, rows, ctx.seq.item[rows], 1, rng)


def _mim(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The window of up to `history` events ending at the row's event, oldest first, one event hidden: any
    of them in train, the row's own event in validation and test (the one event not shown elsewhere)."""
    seq, width = ctx.seq, ctx.settings.history
    first = np.maximum(seq.start[seq.user[rows]], rows - width + 1)
    size = rows - first + 1
    masked = rng.integers(0, size) if split == TRAIN else size - 1
    window = first[:, None] + np.arange(width)[None, :]
    window = np.where(window <= rows[:, None], window, -1)
    columns = event_lines(seq, ctx.titles, window, rated=False)
    columns = [pc.if_else(pa.array(masked == j), MASK, column) for j, column in enumerate(columns)]
    return _choice(ctx, rows, seq.item[first + masked], ctx.settings.options - 1, rng, numbered(columns))


def _wi(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Half the records (at random) show the true next item, the others an item the user never touched."""
    yes = rng.random(len(rows)) < 0.5
    other, ok = ctx.untouched.sample(ctx.seq.user[rows], 1, rng)
    keep = yes | ok
    rows, yes = rows[keep], yes[keep]
    candidate = np.where(yes, ctx.seq.item[rows], other[keep, 0])
    text = concat(_history_text(ctx, rows), "\n\nCandidate: ", take(ctx.cards, candidate))
    return rows, {"input": text, "output": pa.array(np.where(yes, "yes", "no"))}


def _rp(ctx: Context, rows: np.ndarray, split: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A rated history -> the next item's rating in whole stars (halves round up: 3.5 -> 4)."""
    stars = np.clip(np.floor(ctx.seq.rating[rows] + 0.5), 1, 5).astype(int).astype(str)
    text = concat(_history_text(ctx, rows, rated=True), "\n\nItem to rate: ", take(ctx.cards, ctx.seq.item[rows]))
    return rows, {"input": text, "output": pa.array(stars)}


MAKERS: dict[str, Maker] = {"U2I": _u2i, "SR": _sr, "MIM": _mim, "PREF": _pref, "WI": _wi, "RP": _rp}


def build_sequence_tasks(ctx: Context) -> None:
    """Write every sequence task's records (RP only when every event has a rating)."""
    for name, maker in MAKERS.items():
        if name == "RP" and not ctx.rated:
            continue
        rng = ctx.rng(name)
        for split in (TRAIN, VAL, TEST):
            chosen = rows_of(ctx.seq, split, ctx.settings.per_user, rng)
            for rows in ctx.chunks(chosen):
                kept, fields = maker(ctx, rows, split, rng)
                ctx.skip(name, len(rows) - len(kept), UNTOUCHED)
                record_ids = ids(ctx.seq, kept)
                ctx.writer.write(name, SPLITS[split], {
                    "id": record_ids, "instruction": wordings(WORDINGS[name], len(kept), rng), **fields})
                if name in RANKED:
                    ctx.writer.target(name, SPLITS[split], record_ids, ctx.seq.user_ids.take(pa.array(ctx.seq.user[kept])),
                                      ctx.seq.catalog["id"].take(pa.array(ctx.seq.item[kept])))

