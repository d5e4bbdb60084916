"""Tasks built from item attributes: Q2I (a search composed from an item's attributes -> the item) and
AVE (a listing -> where each target attribute's value appears in it; Amazon, from `details` and brand)."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa

from recfound.data.logs.context import Context
from recfound.data.logs.item_tasks import by_split, item_ids
from recfound.data.logs.sampling import draw_items
from recfound.data.logs.text import ragged_lists, take, wordings
from recfound.data.logs.user_tasks import join_words
from recfound.data.logs.wordings import WORDINGS

MAX_QUERY_DETAIL = 25  # longest detail value put into a query
MAX_TARGETS = 3  # attributes asked for per AVE record (plus, half the time, one that is absent)
LISTING_FIELDS = ("title", "features", "description")


def build_attribute_tasks(ctx: Context) -> None:
    _q2i(ctx)
    if not ctx.source.genres:
        _ave(ctx)


def _q2i(ctx: Context) -> None:
    """Movies: `<genres> movie from <year>`; products: `[<detail value>] <leaf category>[ by <brand>]`.
    Negatives never share the query's defining attributes (genre set and year; leaf category)."""
    catalog, rng = ctx.seq.catalog, ctx.rng("Q2I")
    categories, years = catalog["categories"].to_pylist(), catalog["year"].to_pylist()
    brands, details = catalog["brand"].to_pylist(), catalog["details"].to_pylist()
    queries, keys = [], []
    for item in range(ctx.seq.n_items):
        kinds = categories[item] or []
        if ctx.source.genres:
            ok = bool(kinds) and years[item] is not None
            query = f"{join_words([k.lower() for k in kinds])} {ctx.source.noun} from {years[item]}" if ok else None
            key = f"{'|'.join(kinds)}@{years[item]}"
        else:
            values = [d["value"] for d in details[item] or [] if len(d["value"]) <= MAX_QUERY_DETAIL
                      and d["value"].lower() != (brands[item] or "").lower()]
            words = [values[rng.integers(len(values))]] if values else []
            words += kinds[-1:]
            query = " ".join(words) + (f" by {brands[item]}" if brands[item] else "") if kinds else None
            key = kinds[-1] if kinds else ""
        queries.append(query)
        keys.append(key)
    codes = np.unique(np.array(keys, dtype=object), return_inverse=True)[1]
    items = np.array([i for i, q in enumerate(queries) if q is not None], dtype=np.int64)
    for split, at in by_split(ctx, items):
        chosen = items[at]
        negatives, lengths = draw_items(rng, ctx.seq.n_items, len(at), ctx.settings.negatives,
                                        lambda row, other: codes[other] == codes[chosen[row]])
        ctx.writer.write("Q2I", split, {
            "id": item_ids(ctx, chosen), "instruction": wordings(WORDINGS["Q2I"], len(at), rng),
            "query": pa.array([queries[i] for i in chosen]), "positive": take(ctx.cards, chosen),
            "negatives": ragged_lists(ctx.cards, negatives, lengths)})


def _occurs(value: str, text: str | None) -> bool:
    return bool(text) and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE) is not None


def _ave(ctx: Context) -> None:
    """Target attributes come from `details` (and the brand); a value counts where it appears as whole
    words (any case) in the title, features or description, which are all the listing shows."""
    catalog, rng = ctx.seq.catalog, ctx.rng("AVE")
    columns = {name: catalog[name].to_pylist() for name in (*LISTING_FIELDS, "details", "brand")}
    inputs, outputs, items = [], [], []
    for item in range(ctx.seq.n_items):
        fields = {name: columns[name][item] for name in LISTING_FIELDS}
        attributes = {d["name"]: d["value"] for d in columns["details"][item] or []}
        if columns["brand"][item] and "brand" not in {name.lower() for name in attributes}:
            attributes["Brand"] = columns["brand"][item]
        found = {name: [source for source, text in fields.items() if _occurs(value, text)]
                 for name, value in attributes.items()}
        present = [name for name, sources in found.items() if sources][:MAX_TARGETS]
        absent = [name for name, sources in found.items() if not sources]
        if not present:
            continue
        targets = present + ([absent[rng.integers(len(absent))]] if absent and rng.random() < 0.5 else [])
        listing = "\n".join(f"{name.capitalize()}: {text}" for name, text in fields.items() if text)
        inputs.append(f"{listing}\nTarget attributes: {', '.join(targets)}")
        outputs.append(json.dumps([{"attribute": name, "value": attributes[name], "source": source}
                                   for name in present for source in found[name]], ensure_ascii=False))
        items.append(item)
    items = np.array(items, dtype=np.int64)
    for split, at in by_split(ctx, items):
        ctx.writer.write("AVE", split, {
            "id": item_ids(ctx, items[at]), "instruction": wordings(WORDINGS["AVE"], len(at), rng),
            "input": pa.array([inputs[i] for i in at]), "output": pa.array([outputs[i] for i in at])})
