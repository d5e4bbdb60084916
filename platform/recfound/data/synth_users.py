"""Synthetic records about users: SR (next item among options) and UP (profile from rated history)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Iterable

from recfound.data.records import OPTION_LETTERS
from recfound.data.synth_world import Item, World, join_words, pick

N_OPTIONS = 6


def make_sr(world: World, rng: random.Random) -> dict:
    """History (newest first) -> options: the true next item, one same-category item of another brand,
    and items from other top categories."""
    user, history, target = world.window(rng, 3, 8)
    peers = [world.items[i] for i in pick(rng, world.by_sub[target.sub_key], 8, {target.index})]
    near = [p for p in peers if p.brand not in (user.brand, target.brand)] or peers
    tops = [top for top in world.by_top if top != target.top]
    far = [world.items[rng.choice(world.by_top[top])] for top in rng.sample(tops, N_OPTIONS - 1 - len(near[:1]))]
    options = [target, *near[:1], *far]
    rng.shuffle(options)
    return {
        "input": numbered(item.line for item, _ in history),
        "options": [item.line for item in options],
        "output": OPTION_LETTERS[options.index(target)],
    }


def numbered(lines: Iterable[str]) -> str:
    """Lines as a numbered list, one per line."""
    return "\n".join(f"{n}. {line}" for n, line in enumerate(lines, start=1))


def make_up(world: World, rng: random.Random) -> dict:
    """A rated history -> the liked categories, favourite brand and disliked categories it shows."""
    _, history, _ = world.window(rng, 5, 10)
    return {
        "input": numbered(f"{item.line} | {stars} star{'' if stars == 1 else 's'}" for item, stars in history),
        "output": profile(history),
    }


def profile(history: list[tuple[Item, int]]) -> str:
    """The profile text: categories rated 4+ on average (most rated first), the most frequent
    5-star brand, the best-rated item (newest on ties) and categories rated 2 or less."""
    stars: dict[str, list[int]] = {}
    for item, rating in history:
        stars.setdefault(item.sub, []).append(rating)
    ranked = sorted(stars, key=lambda sub: -len(stars[sub]))
    liked = [sub for sub in ranked if sum(stars[sub]) >= 4 * len(stars[sub])]
    disliked = [sub for sub in ranked if sum(stars[sub]) <= 2 * len(stars[sub])]
    brands = Counter(item.brand for item, rating in history if rating == 5).most_common(1)
    text = f"This shopper enjoys {join_words(liked)} products" if liked else "No category stands out as a favourite yet"
    text += f" and keeps coming back to {brands[0][0]}." if brands else "."
    text += f" Their best-rated item is the {max(history, key=lambda pair: pair[1])[0].title}."
    if disliked:
        return f"{text} They were let down by {join_words(disliked)} items."
    return f"{text} Nothing they rated disappointed them."
