"""Record texts assembled column-wise with pyarrow compute: lists of item lines, options, wordings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.split import Sequences
from recfound.data.records import OPTION_LETTERS


def take(texts: pa.Array, index: np.ndarray) -> pa.Array:
    """texts[index], null where index < 0."""
    return texts.take(pa.array(index, type=pa.int64(), mask=index < 0))


def concat(*parts: pa.Array | str) -> pa.Array:
    """Elementwise concatenation of text columns and constants (none of them null)."""
    return pc.binary_join_element_wise(*parts, "")


def numbered(columns: list[pa.Array]) -> pa.Array:
    """Row by row, the non-null entries of `columns` as lines `1. ...`, `2. ...`; nulls only at a row's end.

    (pyarrow's null_handling="skip" drops rows whose entries are all null, so nulls become empty lines
    that are trimmed instead.)"""
    parts = [pc.binary_join_element_wise(f"{n}. ", column, "") for n, column in enumerate(columns, start=1)]
    joined = pc.binary_join_element_wise(*parts, "\n", null_handling="replace", null_replacement="")
    return pc.utf8_rtrim(joined, "\n")


def history(seq: Sequences, rows: np.ndarray, length: int) -> np.ndarray:
    """(rows, length) event indices of the up to `length` events before each row's event, newest first;
    -1 past the user's first event."""
    return recent(seq, rows - 1, seq.user[rows], length)


def recent(seq: Sequences, last: np.ndarray, users: np.ndarray, length: int) -> np.ndarray:
    """(rows, length) event indices of each user's up to `length` events ending at `last`, newest first;
    -1 past the user's first event."""
    index = last[:, None] - np.arange(length)[None, :]
    return np.where(index >= seq.start[users][:, None], index, -1)


def event_lines(seq: Sequences, titles: pa.Array, events: np.ndarray, rated: bool) -> list[pa.Array]:
    """One column per column of `events` (event indices, -1 for none): the item's title, with
    `(rated R)` appended when `rated`."""
    columns = []
    for column in events.T:
        title = take(titles, np.where(column >= 0, seq.item[np.maximum(column, 0)], -1))
        if rated:
            stars = pc.cast(pa.array(seq.rating[np.maximum(column, 0)]), pa.string())
            title = pc.binary_join_element_wise(title, " (rated ", stars, ")", "")
        columns.append(title)
    return columns


def wordings(choices: tuple[str, ...], count: int, rng: np.random.Generator) -> pa.Array:
    """One of the wordings per record, drawn uniformly."""
    return pa.array(choices).take(pa.array(rng.integers(0, len(choices), count)))


def option_lists(cards: pa.Array, options: np.ndarray) -> pa.ListArray:
    """Per row, the cards of its option items (every row has the same number of options)."""
    rows, width = options.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(rows + 1, dtype=np.int32) * width),
                                    cards.take(pa.array(options.ravel(), type=pa.int64())))


def ragged_lists(cards: pa.Array, items: np.ndarray, lengths: np.ndarray) -> pa.ListArray:
    """Per row, the cards of its `lengths[row]` items (`items` holds them row after row)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), cards.take(pa.array(items, type=pa.int64())))


def with_answer(others: np.ndarray, answer: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, pa.Array]:
    """(options, letters): each row's `others` with its answer put at a random place, and that place's letter."""
    rows, width = others.shape[0], others.shape[1] + 1
    place = rng.integers(0, width, rows)
    options = np.empty((rows, width), dtype=np.int64)
    column = np.arange(width)[None, :]
    at_answer = column == place[:, None]
    options[at_answer] = answer
    options[~at_answer] = others.ravel()
    return options, pa.array(np.array(list(OPTION_LETTERS))[place])


def ids(seq: Sequences, rows: np.ndarray) -> pa.Array:
    """`<user id>#<position>`: the user and the place in their sequence a record is about."""
    return concat(seq.user_ids.take(pa.array(seq.user[rows])), "#",
                  pc.cast(pa.array(seq.position[rows]), pa.string()))
