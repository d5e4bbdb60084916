"""Synthetic records about items: AVE (attribute extraction), PRP (relation), PM (matching), IP (profile)."""

from __future__ import annotations

import json
import random
import re

from recfound.data.records import OPTION_LETTERS
from recfound.data.synth_vocab import TAXONOMY
from recfound.data.synth_world import Item, World, join_words, pick, with_article

# option order = relation index: same sub other leaf, same top other sub, same leaf
PRP_OPTIONS = (
    "People who purchase product 1 often purchase product 2 as well.",
    "People who look at product 1 often look at product 2 as well.",
    "Product 1 and product 2 are similar.",
)
SAME_BRAND_SHARE = 0.6  # of PM non-matches drawn from the same brand


def make_ave(world: World, rng: random.Random) -> dict:
    """A listing and 1-2 target attributes -> every (attribute, value, field) where the value occurs."""
    item = world.items[rng.randrange(len(world.items))]
    names = [*item.attributes, "brand"]
    targets = sorted(rng.sample(names, rng.randint(1, 2)), key=names.index)
    fields = {"title": item.title, "description": item.description, "features": item.features, "brand": item.brand}
    triples = [
        {"attribute": name, "value": _value(item, name), "source": source}
        for name in targets for source, text in fields.items() if _occurs(_value(item, name), text)
    ]
    listing = "\n".join(f"{source.capitalize()}: {text}" for source, text in fields.items())
    return {
        "input": f"{listing}\nPrice: {item.price_text}\nTarget attributes: {', '.join(targets)}",
        "output": json.dumps(triples, ensure_ascii=False),
    }


def _value(item: Item, name: str) -> str:
    return item.brand if name == "brand" else item.attributes[name]


def _occurs(value: str, text: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text) is not None


def make_prp(world: World, rng: random.Random) -> dict:
    """Two items whose relation follows their category paths (see PRP_OPTIONS)."""
    relation = rng.randrange(len(PRP_OPTIONS))
    first = world.items[rng.randrange(len(world.items))]
    if relation == 0:
        leaf = rng.choice([name for name in TAXONOMY[first.top][first.sub] if name != first.leaf])
        pool = world.by_leaf[(first.top, first.sub, leaf)]
    elif relation == 1:
        sub = rng.choice([name for name in TAXONOMY[first.top] if name != first.sub])
        pool = world.by_sub[(first.top, sub)]
    else:
        pool = world.by_leaf[first.leaf_key]
    second = world.items[pick(rng, pool, 1, {first.index})[0]]
    return {
        "input": f"Product 1: {first.line}\nProduct 2: {second.line}",
        "options": list(PRP_OPTIONS),
        "output": OPTION_LETTERS[relation],
    }


def make_pm(world: World, rng: random.Random) -> dict:
    """A clean listing and a second shop's noisy listing of the same item (yes) or a look-alike (no)."""
    first = world.items[rng.randrange(len(world.items))]
    same = rng.random() < 0.5
    second = first if same else _look_alike(world, rng, first)
    return {
        "input": f"Listing 1\n{_listing(first)}\n\nListing 2\n{_noisy_listing(rng, second)}",
        "output": "yes" if same else "no",
    }


def _look_alike(world: World, rng: random.Random, item: Item) -> Item:
    """Another item of the same leaf (often the same brand) whose title differs beyond the adjective."""
    same_brand = world.by_leaf_brand[(item.leaf_key, item.brand)]
    pool = same_brand if len(same_brand) > 1 and rng.random() < SAME_BRAND_SHARE else world.by_leaf[item.leaf_key]
    candidates = [world.items[i] for i in pick(rng, pool, 8, {item.index})]
    distinct = [c for c in candidates if _plain_title(c) != _plain_title(item)]
    return (distinct or candidates)[0]


def _plain_title(item: Item) -> str:
    return item.title.replace(f" {item.adjective} ", " ")


def _listing(item: Item) -> str:
    return f"title: {item.title}\ndescription: {item.description}\nmanufacturer: {item.brand}\nprice: {item.price_text}"


def _noisy_listing(rng: random.Random, item: Item) -> str:
    """The same fields as another shop would write them: reworded title, cut description, other price."""
    plain = _plain_title(item)
    title = rng.choice((item.title.lower(), plain, f"{plain[len(item.brand) + 1:]} by {item.brand}"))
    sentences = item.description.split(". ")
    description = rng.choice((". ".join(sentences[:2]).rstrip(".") + ".", "none"))
    manufacturer = rng.choice((item.brand, item.brand.lower(), "unknown"))
    price = item.price * rng.uniform(0.9, 1.1)
    return f"title: {title}\ndescription: {description}\nmanufacturer: {manufacturer}\nprice: {price:.2f}"


def make_ip(world: World, rng: random.Random) -> dict:
    """An item's name and brand -> a profile stating its category, attributes and price."""
    item = world.items[rng.randrange(len(world.items))]
    attributes = join_words([f"{name} {value}" for name, value in item.attributes.items()])
    output = (f"The {item.title} is {with_article(item.noun)} made by {item.brand} and listed under {item.path}. "
              f"It has {attributes}. It is part of the brand's {item.adjective.lower()} line and sells for "
              f"about {item.price_text}.")
    return {"input": f"Item: {item.title}\nBrand: {item.brand}", "output": output}
