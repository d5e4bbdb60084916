"""Which items go together: co-interaction in the train events (items a user touched within `WINDOW`
steps of each other) and, for Amazon, the metadata's bought-together lists. Only train events count,
so no validation or test interaction shapes an item-to-item record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.split import TRAIN, Sequences

WINDOW = 3  # events apart, at most, for two items to count as chosen together
MIN_COUNT = 2  # users who chose a pair together before it can be an item's best neighbour
METADATA_SCORE = 2.0  # above any co-interaction score (a cosine, at most 1)


@dataclass
class Neighbours:
    """Per item its strongest neighbour (-1: none), and every related pair (for keeping them apart)."""

    best: np.ndarray
    keys: np.ndarray  # sorted min(a, b) * n_items + max(a, b) over related pairs
    n_items: int

    def related(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = np.minimum(a, b).astype(np.int64) * self.n_items + np.maximum(a, b)
        found = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        return self.keys[found] == keys if len(self.keys) else np.zeros(keys.shape, dtype=bool)


def find_neighbours(seq: Sequences) -> Neighbours:
    """Co-interaction pairs scored by cosine (count / sqrt(popularity a * popularity b)), with at least
    MIN_COUNT users; metadata pairs first. Ties go to the lower item code. Pairs are counted unordered
    (lower code first), which halves the memory of the count."""
    n = seq.n_items
    train = seq.split == TRAIN
    pairs = []
    for step in range(1, WINDOW + 1):
        at = np.flatnonzero(train[:-step] & train[step:] & (seq.user[:-step] == seq.user[step:]))
        first, second = seq.item[at].astype(np.int64), seq.item[at + step].astype(np.int64)
        pairs.append(np.minimum(first, second) * n + np.maximum(first, second))
    keys, counts = unique_counts(np.concatenate(pairs))
    del pairs
    popularity = np.bincount(seq.item[train], minlength=n)
    low, high = keys // n, keys % n
    strong = counts >= MIN_COUNT
    score = counts[strong] / np.sqrt(popularity[low[strong]] * popularity[high[strong]])
    meta = _metadata_pairs(seq)
    a = np.concatenate([low[strong], high[strong], meta // n, meta % n])
    b = np.concatenate([high[strong], low[strong], meta % n, meta // n])
    scores = np.concatenate([score, score, np.full(2 * len(meta), METADATA_SCORE)])
    order = np.lexsort((b, -scores, a))
    a, b = a[order], b[order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = a[1:] != a[:-1]
    best = np.full(n, -1, dtype=np.int64)
    best[a[first]] = b[first]
    return Neighbours(best, unique_counts(np.concatenate([keys, meta]))[0], n)


def unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, how often each occurs), by sorting (numpy 2's hashing np.unique took
    seconds on a few million keys)."""
    ordered = np.sort(values)
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]])) if len(ordered) else \
        np.zeros(0, dtype=np.int64)
    return ordered[starts], np.diff(np.append(starts, len(ordered)))


def _metadata_pairs(seq: Sequences) -> np.ndarray:
    """min(a, b) * n + max(a, b) for each catalog item a listing catalog item b as bought with it."""
    related = seq.catalog["related"].combine_chunks()
    if not len(related) or related.null_count == len(related):
        return np.zeros(0, dtype=np.int64)
    a = pc.list_parent_indices(related).to_numpy()
    b = pc.fill_null(pc.index_in(pc.list_flatten(related), value_set=seq.catalog["id"]), -1).to_numpy()
    keep = (b >= 0) & (b != a)
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    n = seq.n_items
    return unique_counts(np.minimum(a, b) * n + np.maximum(a, b))[0]


def shared_category(catalog: pa.Table) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A test `shares(a, b)`: do items a and b (arrays) have a category (genre, path node) in common?"""
    categories = catalog["categories"].combine_chunks()
    flat = pc.list_flatten(categories)
    owners = pc.list_parent_indices(categories).to_numpy().astype(np.int64)
    codes = pc.dictionary_encode(flat).indices.to_numpy().astype(np.int64) if len(flat) else np.zeros(0, np.int64)
    width = int(codes.max()) + 1 if len(codes) else 1
    keys = np.sort(owners * width + codes)
    counts = pc.fill_null(pc.list_value_length(categories), 0).to_numpy().astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])

    def shares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a.astype(np.int64)
        per_pair = counts[b]
        pair = np.repeat(np.arange(len(b)), per_pair)
        position = np.repeat(offsets[b], per_pair) + np.arange(per_pair.sum()) - np.repeat(
            np.cumsum(per_pair) - per_pair, per_pair)
        wanted = a[pair] * width + codes[position]
        found = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
        hit = keys[found] == wanted if len(keys) else np.zeros(len(wanted), dtype=bool)
        return np.bincount(pair, weights=hit, minlength=len(b)) > 0

    return shares
