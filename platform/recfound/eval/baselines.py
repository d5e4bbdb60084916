"""Two rankers of the whole catalog that need no model: popularity and item co-occurrence (item-kNN).

Both learn from the train interactions only (pairs of user and item index, each pair once):

- popularity: an item's score is its number of train interactions, the same for every user;
- item-kNN: the cosine of two items over the users who interacted with them in train,
  sim(i, j) = |U_i & U_j| / sqrt(|U_i| |U_j|), sim(i, i) = 0; a user's score for item j is the sum of
  sim(h, j) over the items h of their history. Every neighbour counts (no top-k cut).

Scores come as one dense [users, items] matrix per block of users. Item-kNN's is two sparse products
over the train interactions (a weighted count of each history item's users, then a gather and segment
sums over every user's items), never an items x items matrix: a block holds at most BLOCK_ELEMENTS
numbers per matrix, so memory does not grow with the data, and the time grows as (users scored) x
(train interactions).

A rank is 1 + the other candidates scoring at least as high as the target (ties count against the
target, as in `recfound.eval.retrieval`); the items in a user's `seen` list are not candidates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

BLOCK_ELEMENTS = 1 << 23  # numbers per dense block (64 MiB of float64)
DECIMALS = 9  # item-kNN sums are rounded so that equal sums added in another order tie exactly


@dataclass(frozen=True)
class TrainPairs:
    """The train interactions as two compressed indexes: each user's items and each item's users."""

    n_items: int
    n_users: int
    user_start: np.ndarray  # [n_users + 1] offsets into user_items
    user_items: np.ndarray
    item_start: np.ndarray  # [n_items + 1] offsets into item_users
    item_users: np.ndarray

    @classmethod
    def of(cls, users: np.ndarray, items: np.ndarray, n_items: int) -> TrainPairs:
        """From parallel arrays of user and item indices (users 0..n-1, items 0..n_items-1)."""
        users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        n_users = int(users.max()) + 1 if users.size else 0
        by_user, by_item = np.lexsort((items, users)), np.lexsort((users, items))
        return cls(n_items, n_users, _offsets(users, n_users), items[by_user], _offsets(items, n_items),
                   users[by_item])

    def counts(self) -> np.ndarray:
        """[n_items] train interactions per item."""
        return np.diff(self.item_start)


def _offsets(keys: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(keys, minlength=size))]).astype(np.int64)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """range(starts[0], starts[0] + lengths[0]), then the next range, ... as one array."""
    return np.arange(int(lengths.sum())) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)


def _segment_sums(values: np.ndarray, start: np.ndarray) -> np.ndarray:
    """[rows, segments]: per row, the sum of `values[:, start[s]:start[s + 1]]` for each segment s."""
    out = np.zeros((values.shape[0], len(start) - 1))
    filled = np.flatnonzero(np.diff(start) > 0)
    if filled.size:
        out[:, filled] = np.add.reduceat(values, start[filled], axis=1)
    return out


class Popularity:
    """Every user's score for an item: its train interactions."""

    name = "popularity"

    def __init__(self, train: TrainPairs) -> None:
        self.counts = train.counts().astype(np.float64)
        self.block = max(1, BLOCK_ELEMENTS // max(1, train.n_items))

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[len(histories), n_items] (histories do not matter)."""
        return np.tile(self.counts, (len(histories), 1))


class ItemKNN:
    """A user's score for item j: the sum over their history of the items' cosine with j (module doc)."""

    name = "item-kNN"

    def __init__(self, train: TrainPairs) -> None:
        self.train = train
        counts = train.counts().astype(np.float64)
        self.weight = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
        self.block = max(1, BLOCK_ELEMENTS // max(1, train.n_items, train.n_users, len(train.user_items)))

    def scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """[len(histories), n_items]: S = A X^T X D^-1/2 - diagonal, where X is the train user x item matrix,
        A the histories weighted by D^-1/2 and D the items' counts."""
        train, rows = self.train, len(histories)
        row, item = _pairs(histories)
        # A X^T [rows, users]: each history item's weight added for each of its users
        owners = np.diff(train.item_start)[item]
        users = train.item_users[_ranges(train.item_start[item], owners)]
        by_user = np.bincount(np.repeat(row, owners) * train.n_users + users, np.repeat(self.weight[item], owners),
                              rows * train.n_users).reshape(rows, train.n_users)
        scores = _segment_sums(by_user[:, train.item_users], train.item_start) * self.weight
        np.add.at(scores, (row, item), -(self.weight[item] > 0).astype(np.float64))  # sim(h, h) = 1 came in through h itself
        return np.round(scores, DECIMALS)


def _pairs(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) of every history entry."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    items = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if len(histories) else \
        np.zeros(0, np.int64)
    return np.repeat(np.arange(len(histories)), lengths), items


def ranks_among(scores: np.ndarray, targets: np.ndarray, seen: Sequence[np.ndarray] = ()) -> np.ndarray:
    """[rows] 1-based rank of `targets[r]` in row r of `scores`, the items `seen[r]` left out. `scores` is
    changed in place."""
    rows = np.arange(len(scores))
    if len(seen):
        row, item = _pairs(seen)
        scores[row, item] = -np.inf
    own = scores[rows, targets]
    return (scores >= own[:, None]).sum(axis=1)


def blocks(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most `size` of range(count)."""
    for begin in range(0, count, size):
        yield slice(begin, min(count, begin + size))


def catalog_ranks(ranker: Popularity | ItemKNN, histories: Sequence[np.ndarray], targets: np.ndarray,
                  options: np.ndarray | None = None, answers: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(rank of each target in the whole catalog, its history left out; with `options` ([rows, n] item indices
    of each record's options) and `answers` (the target's column there), also its rank among the options,
    nothing left out)."""
    ranks = np.empty(len(targets), dtype=np.int64)
    among = None if options is None else np.empty(len(targets), dtype=np.int64)
    for part in blocks(len(targets), ranker.block):
        scores = ranker.scores(histories[part])
        if options is not None:
            picked = np.take_along_axis(scores, options[part], axis=1)
            among[part] = ranks_among(picked, answers[part])
        ranks[part] = ranks_among(scores, targets[part], histories[part])
    return ranks, among
