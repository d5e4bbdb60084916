"""What every reader produces: the events (columnar, in the order read) and one item table, with the
item card every task shows for an item."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DETAIL = pa.struct([("name", pa.string()), ("value", pa.string())])
ITEM_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("title", pa.string()),
    ("categories", pa.list_(pa.string())),  # genres (movies) or a category path, most general first
    ("brand", pa.string()),
    ("year", pa.int32()),
    ("features", pa.string()),
    ("description", pa.string()),
    ("details", pa.list_(DETAIL)),  # attribute name -> value (Amazon's `details`)
    ("related", pa.list_(pa.string())),  # ids bought together (Amazon's `bought_together` / `also_buy`)
])
NULL_TEXT = pa.scalar(None, pa.string())


@dataclass
class Events:
    """Interactions in the order read: user and item ids (text or integers), time in ms since the epoch,
    rating (NaN: none)."""

    user: pa.ChunkedArray
    item: pa.ChunkedArray
    time: np.ndarray
    rating: np.ndarray

    def __len__(self) -> int:
        return len(self.time)


@dataclass
class Source:
    """One input read: its events, items (ITEM_SCHEMA), optional user attributes and review texts."""

    name: str  # movielens | amazon
    layout: str  # ml-100k | ml-latest | amazon-2023 | amazon-2018
    events: Events
    items: pa.Table
    users: pa.Table | None = None  # id, age (ML-100K's u.user)
    reviews: Path | None = None  # Parquet: review_title, review_text of each event, in the order read
    genres: bool = False  # the categories are genres (a set), not a category path

    @property
    def noun(self) -> str:
        return "movie" if self.name == "movielens" else "product"


def item_table(columns: dict[str, pa.Array | list]) -> pa.Table:
    """An ITEM_SCHEMA table from the given columns; the ones not given are all null."""
    arrays = []
    for spec in ITEM_SCHEMA:
        value = columns.get(spec.name)
        if value is None:
            arrays.append(pa.nulls(len(columns["id"]), spec.type))
        elif isinstance(value, pa.Array):
            arrays.append(value.cast(spec.type))
        else:
            arrays.append(pa.array(value, spec.type))
    return pa.Table.from_arrays(arrays, schema=ITEM_SCHEMA)


def clean_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Strings with line breaks, HTML breaks and runs of spaces made single spaces; blank ones null."""
    values = pc.replace_substring_regex(values, r"<br\s*/?>", " ")
    cleaned = pc.utf8_trim_whitespace(pc.replace_substring_regex(values, r"\s+", " "))
    return pc.if_else(pc.greater(pc.utf8_length(cleaned), 0), cleaned, NULL_TEXT)


def item_cards(items: pa.Table, genres: bool) -> pa.Array:
    """Each item's card: `Title. Genres: a, b` (movies) or `Title. Category: a > b. Brand: c`."""
    joined = pc.binary_join(items["categories"], ", " if genres else " > ")
    has_categories = pc.fill_null(pc.greater(pc.list_value_length(items["categories"]), 0), False)
    categories = pc.if_else(has_categories, pc.binary_join_element_wise(
        ". Genres: " if genres else ". Category: ", joined, ""), NULL_TEXT)
    brand = pc.binary_join_element_wise(". Brand: ", items["brand"], "")
    return pc.binary_join_element_wise(items["title"], categories, brand, "", null_handling="replace",
                                       null_replacement="").combine_chunks()
