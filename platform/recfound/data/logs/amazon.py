"""Amazon Reviews readers: the 2023 release (reviews keyed by user_id / parent_asin, times in ms) and the
2018 one (reviewerID / asin, unixReviewTime in s), with their item metadata files.

Reviews are read in bulk by pyarrow; their texts go straight to a Parquet file beside the output (the
SA builder streams it back), so only ids, times and ratings stay in memory. Metadata lines are parsed
one at a time and kept as columns, never as a list of dicts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recfound.data.logs.jsonlines import Field, arrow_batches, check, first_objects, objects
from recfound.data.logs.source import Events, Source, clean_text, item_table
from recfound.data.logs.textio import Notes
from recfound.data.reader import RecordError

SAMPLE_LINES = 1_000  # lines read first to tell the layout and spot unknown keys
MAX_DESCRIPTION = 600  # characters of an item description kept (cut at a word)
MAX_DETAIL = 60  # longest detail value kept
CHUNK_ITEMS = 50_000


@dataclass(frozen=True)
class ReviewLayout:
    name: str
    user: str
    item: str
    time: str
    rating: str
    title: str
    text: str
    ms_per_unit: int
    known: frozenset[str]

    @property
    def fields(self) -> tuple[Field, ...]:
        return (Field(self.user, "str", True), Field(self.item, "str", True),
                Field(self.time, "int", True, 0, 2 ** 52 // self.ms_per_unit),
                Field(self.rating, "number", True, 0, 5), Field(self.title, "str"), Field(self.text, "str"))


REVIEWS_2023 = ReviewLayout("amazon-2023", "user_id", "parent_asin", "timestamp", "rating", "title", "text", 1,
                            frozenset({"rating", "title", "text", "images", "asin", "parent_asin", "user_id",
                                       "timestamp", "helpful_vote", "verified_purchase"}))
REVIEWS_2018 = ReviewLayout("amazon-2018", "reviewerID", "asin", "unixReviewTime", "overall", "summary",
                            "reviewText", 1000,
                            frozenset({"overall", "verified", "reviewTime", "reviewerID", "asin", "style",
                                       "reviewerName", "reviewText", "summary", "unixReviewTime", "vote", "image"}))


@dataclass(frozen=True)
class MetaLayout:
    name: str
    id: str
    categories: str
    top_category: str
    brand: str
    features: str
    related: str
    known: frozenset[str]

    @property
    def fields(self) -> tuple[Field, ...]:
        return (Field(self.id, "str", True), Field("title", "str"), Field(self.categories, "list"),
                Field(self.top_category, "str"), Field(self.brand, "str"), Field(self.features, "texts"),
                Field("description", "texts"), Field("details", "dict"), Field(self.related, "list"))


META_2023 = MetaLayout("amazon-2023", "parent_asin", "categories", "main_category", "store", "features",
                       "bought_together",
                       frozenset({"main_category", "title", "average_rating", "rating_number", "features",
                                  "description", "price", "images", "videos", "store", "categories", "details",
                                  "parent_asin", "bought_together", "subtitle", "author"}))
META_2018 = MetaLayout("amazon-2018", "asin", "category", "main_cat", "brand", "feature", "also_buy",
                       frozenset({"category", "tech1", "description", "fit", "title", "also_buy", "tech2", "brand",
                                  "feature", "rank", "also_view", "details", "main_cat", "similar_item", "date",
                                  "price", "asin", "imageURL", "imageURLHighRes"}))


def read_amazon(reviews: Path, meta: Path, scratch: Path, notes: Notes) -> Source:
    """The reviews' events (texts written to `scratch`/reviews.parquet) and the metadata's items."""
    reviews, meta = Path(reviews), Path(meta)
    for path in (reviews, meta):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    layout = _review_layout(reviews, notes)
    events, texts = _read_reviews(reviews, layout, scratch)
    return Source("amazon", layout.name, events, _read_meta(meta, notes), reviews=texts)


def _review_layout(path: Path, notes: Notes) -> ReviewLayout:
    sample = first_objects(path, SAMPLE_LINES)
    number, first = sample[0]
    layout = REVIEWS_2023 if "user_id" in first else REVIEWS_2018 if "reviewerID" in first else None
    if layout is None:
        raise RecordError(path, number, "<record>", "neither Amazon 2023 review fields (user_id, parent_asin, "
                          "timestamp, rating) nor 2018 ones (reviewerID, asin, unixReviewTime, overall)")
    _warn_unknown(path, {key for _, obj in sample for key in obj}, layout.known, notes, f"first {len(sample)} lines")
    return layout


def _warn_unknown(path: Path, keys: set[str], known: frozenset[str], notes: Notes, where: str) -> None:
    unknown = sorted(keys - known)
    if unknown:
        notes.warn(f"{path.name}: ignoring unknown field(s) {', '.join(unknown)} (seen in the {where})")


def _read_reviews(path: Path, layout: ReviewLayout, scratch: Path) -> tuple[Events, Path]:
    users, items, times, ratings = [], [], [], []
    texts = scratch / "reviews.parquet"
    schema = pa.schema([("review_title", pa.string()), ("review_text", pa.string())])
    with pq.ParquetWriter(texts, schema) as writer:
        for batch in arrow_batches(path, layout.fields):
            users.append(batch.column(layout.user))
            items.append(batch.column(layout.item))
            times.append(batch.column(layout.time).to_numpy() * layout.ms_per_unit)
            ratings.append(batch.column(layout.rating).to_numpy())
            writer.write_table(pa.table([clean_text(batch.column(layout.title)), clean_text(batch.column(layout.text))],
                                        schema=schema))
    events = Events(pa.chunked_array(users, pa.string()), pa.chunked_array(items, pa.string()),
                    np.concatenate(times) if times else np.zeros(0, np.int64),
                    np.concatenate(ratings) if ratings else np.zeros(0))
    return events, texts


def _meta_layout(path: Path) -> MetaLayout:
    ((number, first),) = first_objects(path, 1)
    if "parent_asin" in first:
        return META_2023
    if "asin" in first:
        return META_2018
    raise RecordError(path, number, "<record>", "neither Amazon 2023 item metadata (parent_asin, title, ...) nor 2018 "
                      "metadata (asin, title, ...)")


def _read_meta(path: Path, notes: Notes) -> pa.Table:
    layout = _meta_layout(path)
    keys: set[str] = set()
    chunks, rows = [], _MetaColumns()
    for number, obj in objects(path):
        check(path, number, obj, layout.fields)
        keys.update(obj)
        rows.add(obj, layout)
        if len(rows.id) == CHUNK_ITEMS:
            chunks.append(rows.table())
            rows = _MetaColumns()
    chunks.append(rows.table())
    _warn_unknown(path, keys, layout.known, notes, "file")
    table = pa.concat_tables(chunks)
    return table.set_column(1, "title", clean_text(table["title"]).combine_chunks())


class _MetaColumns:
    """Item metadata gathered as columns (lists of plain values), one chunk at a time."""

    def __init__(self) -> None:
        self.id: list[str] = []
        self.title: list[str | None] = []
        self.categories: list[list[str]] = []
        self.brand: list[str | None] = []
        self.features: list[str | None] = []
        self.description: list[str | None] = []
        self.details: list[list[dict]] = []
        self.related: list[list[str]] = []

    def add(self, obj: dict, layout: MetaLayout) -> None:
        self.id.append(obj[layout.id])
        self.title.append(_unescape(obj.get("title")))
        categories = [_unescape(c) for c in obj.get(layout.categories) or [] if isinstance(c, str) and c.strip()]
        top = _unescape(obj.get(layout.top_category))
        self.categories.append(categories or ([top] if top else []))
        self.brand.append(_unescape(obj.get(layout.brand)))
        self.features.append(_joined(obj.get(layout.features), "; "))
        self.description.append(_cut(_joined(obj.get("description"), " "), MAX_DESCRIPTION))
        self.details.append([{"name": name, "value": value} for name, value in _details(obj.get("details"))])
        self.related.append([r for r in obj.get(layout.related) or [] if isinstance(r, str)])

    def table(self) -> pa.Table:
        return item_table({name: values for name, values in vars(self).items()})


def _details(details: dict | None) -> list[tuple[str, str]]:
    """(name, value) of the short text or number details; 2018 names lose their trailing colon."""
    pairs = []
    for name, value in (details or {}).items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            continue
        name, value = _unescape(str(name).rstrip().rstrip(":")), _unescape(str(value))
        if name and value and len(value) <= MAX_DETAIL:
            pairs.append((name, value))
    return pairs


def _unescape(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return " ".join(html.unescape(value).split())


def _joined(value: object, separator: str) -> str | None:
    parts = [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]
    return _unescape(separator.join(p.strip() for p in parts if p.strip()))


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def review_batches(texts: Path, rows: int) -> Iterator[tuple[int, pa.Array]]:
    """(index of the batch's first event, `Review title: ...` + `Review: ...` per event, null where the review
    has neither), streamed in the order read."""
    offset = 0
    for batch in pq.ParquetFile(texts).iter_batches(batch_size=rows):
        title = pc.binary_join_element_wise("Review title: ", batch.column("review_title"), "")
        body = pc.binary_join_element_wise("Review: ", batch.column("review_text"), "")
        joined = pc.utf8_rtrim(pc.utf8_ltrim(pc.binary_join_element_wise(
            title, body, "\n", null_handling="replace", null_replacement=""), "\n"), "\n")
        yield offset, pc.if_else(pc.or_(pc.is_valid(title), pc.is_valid(body)), joined, pa.scalar(None, pa.string()))
        offset += batch.num_rows
