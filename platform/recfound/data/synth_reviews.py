"""Synthetic records built from reviews: SA (sentiment), AP (answerability) and AG (answer generation).

SA reviews carry sentiment words of their label (at most one sentence from a neighbouring label, always
outvoted). AP/AG questions ask for one attribute of an item; the reviews answer it iff one of them
states that attribute's value.
"""

from __future__ import annotations

import random

from recfound.data.records import OPTION_LETTERS
from recfound.data.synth_vocab import (
    ASPECTS, NEUTRAL_FILLERS, SENTIMENT_LABELS, SENTIMENT_TEMPLATES, SENTIMENT_WORDS,
)
from recfound.data.synth_world import Item, World

_MENTIONS = {
    "color": ("Mine came in {value}.", "The {value} looks just like the photos."),
    "material": ("You can tell it is real {value}.", "The {value} feels sturdy."),
}
_DEFAULT_MENTIONS = ("I can confirm the {attribute} is {value}.", "As listed, the {attribute} is {value}.")
_QUESTIONS = ("What is the {attribute} of this {noun}?", "Which {attribute} does the {brand} {noun} have?")
_ANSWER = "Going by the reviews, the {attribute} is {value}."


def make_sa(world: World, rng: random.Random) -> dict:
    """A review whose sentiment words decide its 5-point label; options are the labels, strongest first."""
    item = world.items[rng.randrange(len(world.items))]
    label = rng.randrange(len(SENTIMENT_LABELS))
    labels = [label] * rng.randint(2, 4)
    if len(labels) >= 3 and rng.random() < 0.5:
        labels[-1] = min(max(label + rng.choice((-1, 1)), 0), len(SENTIMENT_LABELS) - 1)
    sentences = [_sentiment_sentence(rng, SENTIMENT_LABELS[i]) for i in labels]
    rng.shuffle(sentences)
    if rng.random() < 0.5:
        sentences.insert(rng.randint(0, len(sentences)), rng.choice(NEUTRAL_FILLERS))
    return {
        "input": f"Product: {item.title}\nReview: {' '.join(sentences)}",
        "options": list(SENTIMENT_LABELS),
        "output": OPTION_LETTERS[label],
    }


def _sentiment_sentence(rng: random.Random, label: str) -> str:
    return rng.choice(SENTIMENT_TEMPLATES).format(aspect=rng.choice(ASPECTS), word=rng.choice(SENTIMENT_WORDS[label]))


def make_ap(world: World, rng: random.Random) -> dict:
    """A question about one attribute and a few reviews; yes iff a review states that attribute."""
    answerable = rng.random() < 0.5
    _, _, text = _question_and_reviews(world, rng, answerable)
    return {"input": text, "output": "yes" if answerable else "no"}


def make_ag(world: World, rng: random.Random) -> dict:
    """A question about one attribute, reviews that state it, and an answer naming the value."""
    item, attribute, text = _question_and_reviews(world, rng, answerable=True)
    return {"input": text, "output": _ANSWER.format(attribute=attribute, value=item.attributes[attribute])}


def _question_and_reviews(world: World, rng: random.Random, answerable: bool) -> tuple[Item, str, str]:
    item = world.items[rng.randrange(len(world.items))]
    names = list(item.attributes)
    attribute = rng.choice(names)
    others = [name for name in names if name != attribute]
    mentioned = rng.sample(others, rng.randint(1, 2)) + ([attribute] if answerable else [])
    reviews = [[rng.choice(NEUTRAL_FILLERS)] for _ in range(rng.randint(2, 3))]
    for name in mentioned:
        sentence = rng.choice(_MENTIONS.get(name, _DEFAULT_MENTIONS))
        review = reviews[rng.randrange(len(reviews))]
        review.insert(rng.randint(0, len(review)), sentence.format(attribute=name, value=item.attributes[name]))
    for review in reviews:
        if rng.random() < 0.5:
            review.append(_sentiment_sentence(rng, rng.choice(SENTIMENT_LABELS[:3])))
    question = rng.choice(_QUESTIONS).format(attribute=attribute, noun=item.noun, brand=item.brand)
    text = f"Question: {question}\nReviews:\n" + "\n".join(f"- {' '.join(review)}" for review in reviews)
    return item, attribute, text
