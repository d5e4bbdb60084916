"""Tasks about items: IP (an item -> its profile), I2I (an item -> its strongest neighbour) and PRP (two
items -> how they relate). Each item lands in one split (seeded); a pair goes where its lower item code
does, so a pair and its reverse share a split. Ratings and co-interactions come from train events only."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.context import Context
from recfound.data.logs.neighbours import Neighbours, find_neighbours, shared_category
from recfound.data.logs.sampling import draw_items
from recfound.data.logs.split import TRAIN
from recfound.data.logs.text import concat, ragged_lists, take, wordings
from recfound.data.logs.user_tasks import join_words
from recfound.data.logs.wordings import WORDINGS
from recfound.data.reader import SPLITS

PRP_OPTIONS = (
    "People who choose item 1 often choose item 2 as well.",
    "They are the same kind of item but are not usually chosen together.",
    "They have nothing in common.",
)
MAX_HIGHLIGHTS = 200  # characters of an item's features quoted in its profile


def build_item_tasks(ctx: Context) -> None:
    neighbours = find_neighbours(ctx.seq)
    _ip(ctx)
    _i2i(ctx, neighbours)
    _prp(ctx, neighbours)


def by_split(ctx: Context, firsts: np.ndarray, seconds: np.ndarray | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(split name, positions into `firsts`) chunk by chunk: an item's split, or a pair's lower item's."""
    owner = firsts if seconds is None else np.minimum(firsts, seconds)
    for split, name in enumerate(SPLITS):
        for chunk in ctx.chunks(np.flatnonzero(ctx.item_split[owner] == split)):
            yield name, chunk


def item_ids(ctx: Context, items: np.ndarray) -> pa.Array:
    return ctx.seq.catalog["id"].take(pa.array(items))


def _ip(ctx: Context) -> None:
    seq, catalog = ctx.seq, ctx.seq.catalog
    train = seq.split == TRAIN
    count = np.bincount(seq.item[train], minlength=seq.n_items)
    total = np.bincount(seq.item[train], weights=np.nan_to_num(seq.rating[train]), minlength=seq.n_items)
    titles, categories = ctx.titles.to_pylist(), catalog["categories"].to_pylist()
    years, brands, features = catalog["year"].to_pylist(), catalog["brand"].to_pylist(), catalog["features"].to_pylist()

    def profile(item: int) -> str | None:
        title, kinds, parts = titles[item], categories[item] or [], []
        if ctx.source.genres:
            kind = f"a {years[item]} {ctx.source.noun}" if years[item] else f"a {ctx.source.noun}"
            if kinds:
                parts.append(f"{title} is {kind} in the genre{'s' if len(kinds) > 1 else ''} {join_words(kinds)}.")
        else:
            if kinds:
                parts.append(f"{title} is listed under {' > '.join(kinds)}.")
            if brands[item]:
                parts.append(f"It is sold by {brands[item]}.")
            if features[item]:
                parts.append(f"Highlights: {features[item][:MAX_HIGHLIGHTS].rstrip(' .;')}.")
        if count[item] and ctx.rated:
            parts.append(f"In this log {count[item]} user{'s' if count[item] > 1 else ''} rated it, "
                         f"{total[item] / count[item]:.1f} out of 5 on average.")
        return " ".join(parts) or None

    profiles = [profile(item) for item in range(seq.n_items)]
    items = np.array([item for item, text in enumerate(profiles) if text is not None], dtype=np.int64)
    rng = ctx.rng("IP")
    for split, at in by_split(ctx, items):
        chosen = items[at]
        ctx.writer.write("IP", split, {
            "id": item_ids(ctx, chosen), "instruction": wordings(WORDINGS["IP"], len(chosen), rng),
            "input": concat("Item: ", take(ctx.titles, chosen)), "output": pa.array([profiles[i] for i in chosen])})


def _i2i(ctx: Context, neighbours: Neighbours) -> None:
    items = np.flatnonzero(neighbours.best >= 0)
    partners = neighbours.best[items]
    rng = ctx.rng("I2I")
    for split, at in by_split(ctx, items, partners):
        queries, positives = items[at], partners[at]
        negatives, lengths = draw_items(rng, ctx.seq.n_items, len(at), ctx.settings.negatives,
                                        lambda row, other: (other == queries[row]) | (other == positives[row])
                                        | neighbours.related(queries[row], other))
        ctx.writer.write("I2I", split, {
            "id": concat(item_ids(ctx, queries), "~", item_ids(ctx, positives)),
            "instruction": wordings(WORDINGS["I2I"], len(at), rng), "query": take(ctx.cards, queries),
            "positive": take(ctx.cards, positives), "negatives": ragged_lists(ctx.cards, negatives, lengths)})


def _prp(ctx: Context, neighbours: Neighbours) -> None:
    """Per item with categories, one pair: its best neighbour (A), an unrelated item of the very same
    categories (B) or an unrelated item sharing no category (C), drawn at random; A falls back to B or C
    for an item without a neighbour. Pairs that cannot be found are left out and counted."""
    catalog, n = ctx.seq.catalog, ctx.seq.n_items
    categories = catalog["categories"].combine_chunks()
    has_categories = pc.fill_null(pc.greater(pc.list_value_length(categories), 0), False).to_numpy(
        zero_copy_only=False)
    items = np.flatnonzero(has_categories)
    rng = ctx.rng("PRP")
    relation = rng.integers(0, 3, len(items))
    lonely = (relation == 0) & (neighbours.best[items] < 0)
    relation[lonely] = 1 + rng.integers(0, 2, int(lonely.sum()))
    partner = np.full(len(items), -1, dtype=np.int64)
    partner[relation == 0] = neighbours.best[items[relation == 0]]
    partner[relation == 1] = _same_categories(rng, categories, items[relation == 1], neighbours)
    shares = shared_category(catalog)
    apart = items[relation == 2]
    found, lengths = draw_items(rng, n, len(apart), 1, lambda row, other: ~has_categories[other]
                                | neighbours.related(apart[row], other) | shares(apart[row], other))
    matched = np.full(len(apart), -1, dtype=np.int64)
    matched[lengths == 1] = found
    partner[relation == 2] = matched
    keep = partner >= 0
    ctx.skip("PRP", int((~keep).sum()), "no item of the drawn relation found")
    items, partner, relation = items[keep], partner[keep], relation[keep]
    for split, at in by_split(ctx, items, partner):
        first, second = items[at], partner[at]
        ctx.writer.write("PRP", split, {
            "id": concat(item_ids(ctx, first), "~", item_ids(ctx, second)),
            "instruction": wordings(WORDINGS["PRP"], len(at), rng),
            "input": concat("Item 1: ", take(ctx.cards, first), "\nItem 2: ", take(ctx.cards, second)),
            "options": pa.array([list(PRP_OPTIONS)] * len(at), pa.list_(pa.string())),
            "output": pa.array(np.array(list("ABC"))[relation[at]])})


def _same_categories(rng: np.random.Generator, categories: pa.Array, items: np.ndarray,
                     neighbours: Neighbours) -> np.ndarray:
    """Per item, a random other item with exactly its categories that is not related to it (-1: none)."""
    group = pc.dictionary_encode(pc.binary_join(categories, "\x1f")).indices.to_numpy(zero_copy_only=False)
    order = np.argsort(group, kind="stable")
    ordered = group[order]
    low = np.searchsorted(ordered, group[items], side="left")
    size = np.searchsorted(ordered, group[items], side="right") - low
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    place = low + rng.integers(0, np.maximum(size - 1, 1))
    place = place + (place >= rank_of[items])  # skip the item itself
    partner = order[np.minimum(place, len(order) - 1)]
    bad = (size < 2) | neighbours.related(items, partner) | (partner == items)
    return np.where(bad, -1, partner)
