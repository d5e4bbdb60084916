"""Tasks about a user as a whole: UP (a rated history -> a profile of their tastes) and UAP (-> their age
group; ML-100K's u.user only). Each user lands in one split (seeded); a record shows their last
`PROFILE_EVENTS` events up to that split's cutoff, newest first."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.context import Context
from recfound.data.logs.tasks_file import AGE_BANDS, AGE_LIMITS
from recfound.data.logs.text import event_lines, numbered, recent, wordings
from recfound.data.logs.wordings import WORDINGS
from recfound.data.reader import SPLITS

PROFILE_EVENTS = 20
LIKED, DISLIKED = 4, 2  # ratings at or above / at or below


def _windows(ctx: Context, users: np.ndarray, split: int) -> np.ndarray:
    return recent(ctx.seq, ctx.seq.cutoff(split)[users], users, PROFILE_EVENTS)


def join_words(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _ranked(counts: Counter, limit: int) -> list[str]:
    """Most counted first; ties in first-seen order (Counter keeps insertion order)."""
    return [name for name, _ in sorted(counts.items(), key=lambda pair: -pair[1])][:limit]


class _Profiler:
    """The profile text of a rated window: the categories of the items rated 4+ (most often first) and of
    those rated 2 or less, the best-rated item (newest on ties), the usual decade (movies), a brand picked
    twice or more among the items rated 4+ (products)."""

    def __init__(self, ctx: Context) -> None:
        catalog = ctx.seq.catalog
        self.ctx = ctx
        self.titles = ctx.titles.to_pylist()
        # genres count one by one; of a category path only its most specific node
        self.categories = [(kinds or []) if ctx.source.genres else (kinds or [])[-1:]
                           for kinds in catalog["categories"].to_pylist()]
        self.years = catalog["year"].to_pylist()
        self.brands = catalog["brand"].to_pylist()
        self.noun = ctx.source.noun

    def __call__(self, events: np.ndarray) -> str:
        seq = self.ctx.seq
        events = events[events >= 0]
        items, ratings = seq.item[events].tolist(), seq.rating[events].tolist()
        liked, disliked, brands = Counter(), Counter(), Counter()
        for item, rating in zip(items, ratings):
            for category in self.categories[item]:
                if rating >= LIKED:
                    liked[category] += 1
                elif rating <= DISLIKED:
                    disliked[category] += 1
            if rating >= LIKED and self.brands[item]:
                brands[self.brands[item]] += 1
        best = max(range(len(items)), key=lambda i: (ratings[i], -i))  # newest of the best rated
        top = _ranked(liked, 3)
        low = [name for name in _ranked(disliked, 4) if name not in top][:2]
        text = f"Likes {join_words(top)}." if top else f"No kind of {self.noun} stands out as a favourite yet."
        if low:
            text += f" Rates {join_words(low)} low."
        text += f" Favourite: {self.titles[items[best]]} ({ratings[best]:g} stars)."
        decades = Counter(self.years[item] // 10 * 10 for item in items if self.years[item])
        if decades:
            text += f" Mostly {self.noun}s from the {decades.most_common(1)[0][0]}s."
        favourite_brand = brands.most_common(1)
        if favourite_brand and favourite_brand[0][1] >= 2:
            text += f" Keeps coming back to {favourite_brand[0][0]}."
        return text


def build_user_tasks(ctx: Context) -> None:
    """UP for every kept user (when ratings exist), UAP for those with an age in u.user."""
    if not ctx.rated:
        return
    ages = _ages(ctx)
    profile = _Profiler(ctx)
    for name in ("UP", "UAP") if ages is not None else ("UP",):
        rng = ctx.rng(name)
        for split, split_name in enumerate(SPLITS):
            users = np.flatnonzero(ctx.user_split == split)
            if name == "UAP":
                users = users[ages[users] >= 0]
            for chunk in ctx.chunks(users):
                windows = _windows(ctx, chunk, split)
                text = numbered(event_lines(ctx.seq, ctx.titles, windows, rated=True))
                output = [profile(row) for row in windows] if name == "UP" else \
                    np.array(AGE_BANDS)[np.searchsorted(AGE_LIMITS, ages[chunk], side="right")]
                ctx.writer.write(name, split_name, {
                    "id": ctx.seq.user_ids.take(pa.array(chunk)), "instruction": wordings(WORDINGS[name], len(chunk), rng),
                    "input": text, "output": pa.array(output, pa.string())})


def _ages(ctx: Context) -> np.ndarray | None:
    """Per kept user, their age (-1 when u.user has no line for them); None without a users table."""
    users = ctx.source.users
    if users is None:
        return None
    row = pc.fill_null(pc.index_in(ctx.seq.user_ids, value_set=users["id"]), -1).to_numpy()
    ages = np.append(users["age"].to_numpy(), -1)
    return ages[row]
