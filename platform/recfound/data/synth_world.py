"""The shared world of the synthetic corpus: a product catalog and users with stable tastes.

Every task draws its records from one `World` built from the seed, so the same items and users
recur across tasks and splits (records differ, facts agree).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Collection, Sequence

from recfound.data.synth_vocab import (
    ADJECTIVES, ATTRIBUTES, BRANDS, GENERIC_FEATURES, TAXONOMY, USE_SENTENCES,
)

SubKey = tuple[str, str]  # (top, sub)
LeafKey = tuple[str, str, str]  # (top, sub, leaf)

TIMELINE_LENGTH = 30
LIKED_SHARE, DISLIKED_SHARE = 0.75, 0.10  # the rest of a timeline is random items from other categories
# Brand-loyal shoppers: the share of a liked item's draws made of the favourite brand, where it sells in that
# category. At 0.5, with a second liked category in any department, U2I's positive could seldom be told from
# its same-category negatives (docs/training.md, U2I).
FAVOURITE_BRAND_SHARE = 0.85
RELATED_SECOND_SHARE = 0.5  # users who like a second category of the first one's department

_ATTRIBUTE_SENTENCES = {
    "color": ("Finished in {value}.", "Shown here in {value}."),
    "material": ("Made of {value}.", "Built from durable {value}."),
}
_DEFAULT_SENTENCES = ("The {attribute} is {value}.", "{Attribute}: {value}.")


@dataclass(frozen=True, eq=False)
class Item:
    """One product: where it sits in the taxonomy, who makes it, its attributes and listing texts."""

    index: int
    top: str
    sub: str
    leaf: str
    noun: str
    brand: str
    adjective: str
    attributes: dict[str, str]
    title: str
    description: str
    features: str
    price: float

    @property
    def sub_key(self) -> SubKey:
        return self.top, self.sub

    @property
    def leaf_key(self) -> LeafKey:
        return self.top, self.sub, self.leaf

    @property
    def path(self) -> str:
        return f"{self.top} > {self.sub} > {self.leaf}"

    @property
    def line(self) -> str:
        """Title and category path on one line, the way item lists show it."""
        return f"{self.title} | {self.path}"

    @property
    def price_text(self) -> str:
        return f"${self.price:.2f}"


@dataclass(frozen=True)
class User:
    """A shopper: liked and disliked sub categories, a favourite brand and a rated timeline (oldest first)."""

    liked: tuple[SubKey, ...]
    disliked: SubKey
    brand: str
    timeline: tuple[tuple[int, int], ...]  # (item index, stars 1-5)


@dataclass
class World:
    """The catalog with lookup tables, and the users."""

    items: list[Item]
    users: list[User]
    by_top: dict[str, list[int]]
    by_sub: dict[SubKey, list[int]]
    by_leaf: dict[LeafKey, list[int]]
    by_sub_brand: dict[tuple[SubKey, str], list[int]]
    by_leaf_brand: dict[tuple[LeafKey, str], list[int]]

    def window(self, rng: random.Random, shortest: int, longest: int) -> tuple[User, list[tuple[Item, int]], Item]:
        """A user, a stretch of their rated history (newest first) and the liked item they chose next."""
        while True:
            user = self.users[rng.randrange(len(self.users))]
            ends = [t for t in range(shortest, len(user.timeline)) if user.timeline[t][1] >= 4]
            if ends:
                break
        end = rng.choice(ends)
        start = end - rng.randint(shortest, min(longest, end))
        history = [(self.items[i], stars) for i, stars in reversed(user.timeline[start:end])]
        return user, history, self.items[user.timeline[end][0]]


def pick(rng: random.Random, pool: Sequence[int], k: int, exclude: Collection[int] = frozenset()) -> list[int]:
    """Up to `k` distinct members of `pool` not in `exclude` (fewer only when the pool runs out)."""
    chosen: list[int] = []
    for _ in range(8 * k):
        candidate = pool[rng.randrange(len(pool))]
        if candidate not in exclude and candidate not in chosen:
            chosen.append(candidate)
            if len(chosen) == k:
                return chosen
    rest = [c for c in pool if c not in exclude and c not in chosen]
    return chosen + rng.sample(rest, min(k - len(chosen), len(rest)))


def join_words(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def with_article(noun: str) -> str:
    """'a tent', 'an armband'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def build_world(seed: int, n_items: int) -> World:
    """The catalog of `n_items` products and about one user per four items, all drawn from `seed`."""
    rng = random.Random(f"recfound-synth-world/{seed}")
    brands_of_top = _assign_brands(rng)
    leaves = [(top, sub, leaf) for top, subs in TAXONOMY.items() for sub, lvs in subs.items() for leaf in lvs]
    base_price = {leaf: rng.uniform(8.0, 120.0) for leaf in leaves}
    items: list[Item] = []
    titles: set[str] = set()
    while len(items) < n_items:
        leaf = leaves[len(items) % len(leaves)]
        item = _make_item(rng, len(items), leaf, rng.choice(brands_of_top[leaf[0]]), base_price[leaf])
        if item.title not in titles:
            titles.add(item.title)
            items.append(item)
    world = World(items, [], {}, {}, {}, {}, {})
    for item in items:
        world.by_top.setdefault(item.top, []).append(item.index)
        world.by_sub.setdefault(item.sub_key, []).append(item.index)
        world.by_leaf.setdefault(item.leaf_key, []).append(item.index)
        world.by_sub_brand.setdefault((item.sub_key, item.brand), []).append(item.index)
        world.by_leaf_brand.setdefault((item.leaf_key, item.brand), []).append(item.index)
    world.users = [_make_user(rng, world, brands_of_top) for _ in range(max(64, n_items // 4))]
    return world


def _assign_brands(rng: random.Random) -> dict[str, list[str]]:
    """Each brand sells in one top category, some in a second one too."""
    tops = list(TAXONOMY)
    brands = list(BRANDS)
    rng.shuffle(brands)
    by_top: dict[str, list[str]] = {top: [] for top in tops}
    for i, brand in enumerate(brands):
        by_top[tops[i % len(tops)]].append(brand)
        if rng.random() < 0.3:
            by_top[rng.choice(tops)].append(brand)
    return {top: sorted(set(names)) for top, names in by_top.items()}


def _make_item(rng: random.Random, index: int, leaf: LeafKey, brand: str, base_price: float) -> Item:
    top, sub, leaf_name = leaf
    noun = rng.choice(TAXONOMY[top][sub][leaf_name])
    adjective = rng.choice(list(ADJECTIVES))
    attributes = {name: rng.choice(values) for name, values in ATTRIBUTES[top].items()}
    names = list(attributes)
    in_title = sorted(rng.sample(names, rng.randint(1, 2)), key=names.index)
    title_noun = " ".join(word.capitalize() for word in noun.split())
    title = f"{brand} {adjective} {title_noun} ({', '.join(attributes[a] for a in in_title)})"
    price = math.floor(base_price * ADJECTIVES[adjective] * rng.uniform(0.85, 1.15)) + 0.99
    return Item(index, top, sub, leaf_name, noun, brand, adjective, attributes, title,
                _description(rng, noun, brand, sub, leaf_name, attributes), _features(rng, attributes), price)


def _description(rng: random.Random, noun: str, brand: str, sub: str, leaf: str, attributes: dict[str, str]) -> str:
    sentences = [f"This {noun} by {brand} belongs to our {leaf.lower()} range."]
    order = list(attributes)
    rng.shuffle(order)
    for name in order:
        template = rng.choice(_ATTRIBUTE_SENTENCES.get(name, _DEFAULT_SENTENCES))
        sentences.append(template.format(attribute=name, Attribute=name.capitalize(), value=attributes[name]))
    sentences.append(rng.choice(USE_SENTENCES).format(sub=sub.lower(), brand=brand))
    return " ".join(sentences)


def _features(rng: random.Random, attributes: dict[str, str]) -> str:
    shown = rng.sample(list(attributes), rng.randint(1, 2))
    parts = [f"{name}: {attributes[name]}" for name in shown] + rng.sample(GENERIC_FEATURES, rng.randint(1, 2))
    rng.shuffle(parts)
    return "; ".join(parts)


def _make_user(rng: random.Random, world: World, brands_of_top: dict[str, list[str]]) -> User:
    subs = list(world.by_sub)
    liked = _liked_categories(rng, subs)
    disliked = rng.choice([s for s in subs if s not in liked])
    brand = rng.choice(brands_of_top[liked[0][0]])
    others = [s for s in subs if s not in liked and s != disliked]
    timeline = []
    for _ in range(TIMELINE_LENGTH):
        roll = rng.random()
        if roll < LIKED_SHARE:
            timeline.append(_liked_pick(rng, world, rng.choice(liked), brand))
        elif roll < LIKED_SHARE + DISLIKED_SHARE:
            timeline.append((rng.choice(world.by_sub[disliked]), rng.randint(1, 2)))
        else:
            timeline.append((rng.choice(world.by_sub[rng.choice(others)]), 3))
    return User(liked, disliked, brand, tuple(timeline))


def _liked_categories(rng: random.Random, subs: list[SubKey]) -> tuple[SubKey, ...]:
    """One sub category, and for some users a second of the same department (where the favourite
    brand, drawn from the first's department, usually sells too)."""
    first = rng.choice(subs)
    related = [sub for sub in subs if sub[0] == first[0] and sub != first]
    return (first, rng.choice(related)) if related and rng.random() < RELATED_SECOND_SHARE else (first,)


def _liked_pick(rng: random.Random, world: World, sub: SubKey, brand: str) -> tuple[int, int]:
    """An item of a liked category: five stars for the favourite brand, four for the others."""
    favourites = world.by_sub_brand.get((sub, brand))
    if favourites and rng.random() < FAVOURITE_BRAND_SHARE:
        index = rng.choice(favourites)
    else:
        index = rng.choice(world.by_sub[sub])
    return index, 5 if world.items[index].brand == brand else 4
