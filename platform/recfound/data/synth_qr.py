"""Synthetic QR records: short assistant dialogues whose marked turns lean on earlier turns.

Each template turn is (as said, rewritten) where rewritten is None for a turn that stands on its own.
Slots: {p}/{q} people (with {p_he}, {p_him}, {q_him} pronouns), {item} ({an_item} with its article),
{color}, {store}, {day}, {time}, {city}.
"""

from __future__ import annotations

import random

from recfound.data.synth_vocab import CITIES, COLORS, DAYS, FEMALE_NAMES, MALE_NAMES, TIMES
from recfound.data.synth_world import World, with_article

REWRITE_TAG = " [rewrite]"

Turn = tuple[str, str | None]
_TEMPLATES: tuple[tuple[Turn, ...], ...] = (
    # calls and messages
    (("Do I have any missed calls today?", None),
     ("Yes, two. They are from {p} and {q}.", "Yes, you have two missed calls today. They are from {p} and {q}."),
     ("Call {q} first.", None),
     ("Calling {q_him} now.", "Calling {q} now.")),
    (("Did {p} call me this morning?", None),
     ("Yes, {p_he} called at {time}.", "Yes, {p} called at {time}."),
     ("Call {p_him} back after lunch.", "Call {p} back after lunch."),
     ("Okay, I will remind you.", None)),
    (("Send a message to {p}.", None),
     ("What should it say?", "What should the message to {p} say?"),
     ("Tell {p_him} I will be late on {day}.", "Tell {p} I will be late on {day}."),
     ("Sent it to {p_him}.", "Sent the message to {p}.")),
    (("Set up a meeting with {p} and {q}.", None),
     ("For what day?", "For what day is the meeting with {p} and {q}?"),
     ("{day} at {time}.", None),
     ("I invited them both.", "I invited {p} and {q} to the meeting on {day} at {time}.")),
    # orders
    (("Order {an_item} from the {store}.", None),
     ("Which color do you want?", "Which color do you want for the {item}?"),
     ("The {color} one.", "The {color} {item}."),
     ("Done, it will ship on {day}.", "Done, the {item} will ship on {day}.")),
    (("Is my {item} order confirmed?", None),
     ("Yes, it was confirmed on {day}.", "Yes, your {item} order was confirmed on {day}."),
     ("Can you add a second one?", "Can you add a second {item}?"),
     ("Sure, I added it.", "Sure, I added a second {item}.")),
    # deliveries
    (("When will my {item} arrive?", None),
     ("It should arrive on {day}.", "Your {item} should arrive on {day}."),
     ("Can {p} sign for it?", "Can {p} sign for the {item}?"),
     ("Yes, {p_he} can.", "Yes, {p} can sign for the {item}.")),
    (("Track the package from the {store}.", None),
     ("It is in {city} right now.", "The package from the {store} is in {city} right now."),
     ("Will it come before {day}?", "Will the package from the {store} come before {day}?"),
     ("Yes, it will.", "Yes, the package from the {store} will come before {day}.")),
    # stores
    (("Is the {store} open on {day}?", None),
     ("Yes, it opens at {time} that day.", "Yes, the {store} opens at {time} on {day}."),
     ("Do they sell {an_item}?", "Does the {store} sell {an_item}?"),
     ("They have two in stock.", "The {store} has two of the {item} in stock.")),
    (("Where is the nearest {store}?", None),
     ("There is one in {city}.", "There is a {store} in {city}."),
     ("How late is it open?", "How late is the {store} in {city} open?"),
     ("Until {time}.", "The {store} in {city} is open until {time}.")),
)


def make_qr(world: World, rng: random.Random) -> dict:
    """A dialogue with the turns to rewrite tagged, and the dialogue with those turns made explicit."""
    item = world.items[rng.randrange(len(world.items))]
    slots = {**_person(rng, "p"), "item": item.noun, "an_item": with_article(item.noun), "color": rng.choice(COLORS),
             "store": f"{item.brand} store", "day": rng.choice(DAYS), "time": rng.choice(TIMES),
             "city": rng.choice(CITIES)}
    while True:
        other = _person(rng, "q")
        if other["q"] != slots["p"]:
            break
    slots.update(other)
    said, rewritten = [], []
    for n, (raw, explicit) in enumerate(rng.choice(_TEMPLATES)):
        speaker = "AB"[n % 2]
        said.append(f"{speaker}: {raw.format(**slots)}{REWRITE_TAG if explicit else ''}")
        rewritten.append(f"{speaker}: {(explicit or raw).format(**slots)}")
    return {"input": "\n".join(said), "output": "\n".join(rewritten)}


def _person(rng: random.Random, slot: str) -> dict[str, str]:
    female = rng.random() < 0.5
    name = rng.choice(FEMALE_NAMES if female else MALE_NAMES)
    return {slot: name, f"{slot}_he": "she" if female else "he", f"{slot}_him": "her" if female else "him"}
