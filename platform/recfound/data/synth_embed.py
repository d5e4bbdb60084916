"""Synthetic records of the embedding tasks: U2I, Q2I and I2I (query, positive, 3 hard negatives)."""

from __future__ import annotations

import random

from recfound.data.synth_world import Item, World, pick

N_NEGATIVES = 3


def make_u2i(world: World, rng: random.Random) -> dict:
    """A user's recent history (newest first) -> the liked item they chose next."""
    user, history, target = world.window(rng, 3, 8)
    candidates = [world.items[i] for i in pick(rng, world.by_sub[target.sub_key], 4 * N_NEGATIVES, {target.index})]
    # other brands first: the favourite brand is what separates the positive from its category peers
    candidates.sort(key=lambda item: item.brand == user.brand)
    return {
        "query": "\n".join(item.line for item, _ in history),
        "positive": target.line,
        "negatives": [item.line for item in candidates[:N_NEGATIVES]],
    }


def make_q2i(world: World, rng: random.Random) -> dict:
    """A search built from an item's noun, attributes and maybe brand or price cap -> that item."""
    item = world.items[rng.randrange(len(world.items))]
    names = list(item.attributes)
    wanted = {name: item.attributes[name] for name in sorted(rng.sample(names, rng.randint(1, 2)), key=names.index)}
    extra = rng.choice(("", "brand", "price"))
    cap = (int(item.price) // 10 + 1) * 10
    query = " ".join([*wanted.values(), item.noun])
    if extra == "brand":
        query += f" from {item.brand}"
    elif extra == "price":
        query += f" under ${cap}"

    def matches(other: Item) -> bool:
        return (other.noun == item.noun and all(other.attributes[k] == v for k, v in wanted.items())
                and (extra != "brand" or other.brand == item.brand) and (extra != "price" or other.price < cap))

    negatives: list[Item] = []
    seen = {item.index}
    for pool in (world.by_leaf[item.leaf_key], world.by_sub[item.sub_key], world.by_top[item.top]):
        found = [world.items[i] for i in pick(rng, pool, 4 * N_NEGATIVES, seen)]
        negatives += [other for other in found if not matches(other)]
        seen.update(other.index for other in found)
        if len(negatives) >= N_NEGATIVES:
            break
    return {"query": query, "positive": item_card(item), "negatives": [item_card(o) for o in negatives[:N_NEGATIVES]]}


def item_card(item: Item) -> str:
    """Title, category path, product type, every attribute and the price: what a search result shows. The
    type is the noun as a query writes it ("frying pan"; the title says "Frying Pan"): without it a query and
    its item shared only attribute values, and Q2I's embeddings collapsed (docs/training.md)."""
    attributes = "; ".join(f"{name}: {value}" for name, value in item.attributes.items())
    return f"{item.line} | type: {item.noun}; {attributes}; price: {item.price_text}"


def make_i2i(world: World, rng: random.Random) -> dict:
    """An item -> another item of the same leaf category (same brand, else most shared attributes)."""
    item = world.items[rng.randrange(len(world.items))]
    same_brand = pick(rng, world.by_leaf_brand[(item.leaf_key, item.brand)], 1, {item.index})
    if same_brand:
        positive = world.items[same_brand[0]]
    else:
        peers = [world.items[i] for i in pick(rng, world.by_leaf[item.leaf_key], 8, {item.index})]
        positive = max(peers, key=lambda other: _shared_attributes(item, other))
    others = [world.items[i] for i in pick(rng, world.by_top[item.top], 4 * N_NEGATIVES, {item.index})]
    negatives = [other.line for other in others if other.leaf != item.leaf][:N_NEGATIVES]
    return {"query": item.line, "positive": positive.line, "negatives": negatives}


def _shared_attributes(item: Item, other: Item) -> int:
    return sum(other.attributes[name] == value for name, value in item.attributes.items())
