"""Seeded, vectorised choices: which train events become records, and items a user never touched
(the negatives and wrong options, drawn uniformly from the catalog)."""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np

from recfound.data.logs.split import TRAIN, Sequences

ROUNDS = 8  # rejection rounds before the few rows left are drawn exactly


def task_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one task (or other named use): depends on the seed and the name only."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def rows_of(seq: Sequences, split: int, per_user: int, rng: np.random.Generator, first_position: int = 1) -> np.ndarray:
    """The events a split's records are about: every user's validation or test event, or for train up to
    `per_user` train events per user at position >= `first_position`, chosen at random (0: all)."""
    if split != TRAIN:
        return seq.targets(split)
    candidates = np.flatnonzero((seq.split == TRAIN) & (seq.position >= first_position))
    if per_user <= 0:
        return candidates
    order = np.argsort(seq.user[candidates] + rng.random(len(candidates)))  # by user, at random within
    users = seq.user[candidates[order]]
    rank = np.arange(len(order)) - np.searchsorted(users, users, side="left")
    return np.sort(candidates[order[rank < per_user]])


def one_per_group(rng: np.random.Generator, count: int, shares: tuple[float, float]) -> np.ndarray:
    """A split code (train, validation, test) for each of `count` users or items: train with probability
    shares[0], validation shares[1], test the rest."""
    draw = rng.random(count)
    return np.where(draw < shares[0], 0, np.where(draw < shares[0] + shares[1], 1, 2)).astype(np.int8)


def draw_items(rng: np.random.Generator, n_items: int, count: int, k: int,
               reject: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(items, lengths): for each of `count` rows up to k distinct random items that `reject(rows, items)`
    lets through, row after row (a row may get fewer than k when most draws are rejected)."""
    candidates = rng.integers(0, n_items, (count, 4 * k + 4))
    rows = np.repeat(np.arange(count), candidates.shape[1])
    good = ~reject(rows, candidates.ravel()).reshape(candidates.shape) & ~_repeats(candidates)
    good &= np.cumsum(good, axis=1) <= k
    return candidates[good], good.sum(axis=1)


class Untouched:
    """Draws items each user never interacted with (in any split)."""

    def __init__(self, seq: Sequences) -> None:
        self.seq = seq
        self.keys = np.sort(seq.user.astype(np.int64) * seq.n_items + seq.item)

    def touched(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise: did users[i] touch items[i] (arrays broadcast)?"""
        keys = users.astype(np.int64) * self.seq.n_items + items
        found = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[found] == keys

    def sample(self, users: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(items, ok): items[i] holds k distinct items users[i] never touched; ok[i] is False (and the
        row -1) when the user left fewer than k items of the catalog untouched."""
        n_items = self.seq.n_items
        out = np.full((len(users), k), -1, dtype=np.int64)
        ok = n_items - self.seq.length[users] >= k
        todo = np.flatnonzero(ok) if k else np.zeros(0, dtype=np.int64)
        for _ in range(ROUNDS):
            if not todo.size:
                break
            candidates = rng.integers(0, n_items, (len(todo), 2 * k + 4))
            good = ~self.touched(users[todo][:, None], candidates) & ~_repeats(candidates)
            rank = np.cumsum(good, axis=1)
            full = rank[:, -1] >= k
            chosen = good[full] & (rank[full] <= k)
            out[todo[full]] = candidates[full][chosen].reshape(-1, k)
            todo = todo[~full]
        for row in todo:
            user = users[row]
            mine = self.seq.item[self.seq.start[user]: self.seq.start[user] + self.seq.length[user]]
            out[row] = rng.choice(np.setdiff1d(np.arange(n_items), mine), k, replace=False)
        return out, ok


def _repeats(values: np.ndarray) -> np.ndarray:
    """True where a row's value already occurred earlier in that row."""
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    repeat = np.zeros_like(values, dtype=bool)
    repeat_sorted = np.zeros_like(repeat)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return repeat
