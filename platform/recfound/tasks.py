"""The task registry: the 13 RecFound tasks and everything the pipeline needs to know about them.

Adding a task is one entry in a task file (`recfound.task_file`, e.g. `<root>/tasks.yaml`) or one
`register(Task(...))` call, plus its data files `<root>/<split>/<NAME>.jsonl`: the reader, validator,
streams and mixer only look tasks up here and never name a task themselves.

The registry is per process. Values shipped to Ray workers that look tasks up there (the run config,
an evaluation's model source) derive from `CarriesAddedTasks`: they carry the tasks added beyond the
13 built-ins, and unpickling one registers them first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Kind(str, Enum):
    """Which branch of the model a task trains: the embedding (retrieval) or generative one."""

    EMBEDDING = "embedding"
    GENERATIVE = "generative"


class AnswerType(str, Enum):
    """What a generative task's `output` must look like (embedding tasks have none)."""

    NONE = "none"  # embedding tasks: the target is the positive text
    FREE_TEXT = "free_text"
    OPTION_LETTER = "option_letter"  # "B" or "B: <text of option B>"
    YES_NO = "yes_no"
    LABEL_SET = "label_set"  # one of Task.labels, case-insensitive
    ATTRIBUTE_JSON = "attribute_json"  # JSON list of {"attribute", "value", "source"}


@dataclass(frozen=True)
class Task:
    """One task: its name, branch, how it is scored, what a valid answer is, and its wordings."""

    name: str
    kind: Kind
    description: str
    metric: str
    answer_type: AnswerType
    instructions: tuple[str, ...]
    labels: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.upper():
            raise ValueError(f"task name {self.name!r} must be an upper-case identifier (e.g. 'Q2I')")
        if len(self.instructions) < 3:
            raise ValueError(f"task {self.name}: give at least 3 instruction wordings")
        if (self.kind is Kind.EMBEDDING) != (self.answer_type is AnswerType.NONE):
            raise ValueError(f"task {self.name}: embedding tasks, and only they, have answer type 'none'")
        if self.answer_type is AnswerType.LABEL_SET and not self.labels:
            raise ValueError(f"task {self.name}: answer type 'label_set' needs labels")


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task to the registry (names are unique)."""
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name} is already registered")
    _REGISTRY[task.name] = task
    return task


def register_all(tasks: Iterable[Task]) -> None:
    """Register `tasks` in order, skipping those already registered as the same task (so receiving them
    twice is harmless); a name registered as a different task is an error, and then nothing is registered."""
    tasks = list(tasks)
    for task in tasks:
        if _REGISTRY.get(task.name, task) != task:
            raise ValueError(f"task {task.name} is already registered with another definition")
    for task in tasks:
        _REGISTRY.setdefault(task.name, task)


def get_task(name: str) -> Task:
    """The registered task called `name`, or a KeyError that lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(_REGISTRY)}") from None


def all_tasks() -> list[Task]:
    """Every registered task, in registration order (embedding tasks first for the built-ins)."""
    return list(_REGISTRY.values())


def tasks_of_kind(kind: Kind | str) -> list[Task]:
    """The registered tasks of one kind, in registration order."""
    kind = Kind(kind)
    return [t for t in _REGISTRY.values() if t.kind is kind]


def task_names(kind: Kind | str | None = None) -> list[str]:
    """Names of all tasks, or of one kind's tasks."""
    tasks = all_tasks() if kind is None else tasks_of_kind(kind)
    return [t.name for t in tasks]


def task_index(name: str) -> int:
    """A task's row in the model's task-embedding table (its position in the registry)."""
    get_task(name)
    return list(_REGISTRY).index(name)


def added_tasks() -> tuple[Task, ...]:
    """The tasks registered beyond the 13 built-ins (task files, `register` calls), in registration order."""
    return tuple(task for name, task in _REGISTRY.items() if name not in BUILTIN_TASKS)


class CarriesAddedTasks:
    """Base of values sent to other processes that look tasks up there: the pickle carries this process's
    `added_tasks()`, and unpickling registers them before the value is used. A fresh process (a Ray Train
    worker) thus gets the sender's registry in the sender's order, and with it the same task indices."""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, _ADDED: added_tasks()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        register_all(state.pop(_ADDED, ()))
        self.__dict__.update(state)  # as pickle does by default (frozen dataclasses included)


_ADDED = "_added_tasks"


# --- the 13 RecFound tasks (wordings are ours) -------------------------------------------

register(Task(
    "U2I", Kind.EMBEDDING, "user behaviour sequence -> the next item", "mrr@20", AnswerType.NONE,
    (
        "Embed this shopper's recent purchases, newest first, so that the product they buy next lies close by.",
        "Turn the purchase history below (latest first) into a vector that points at the user's next item.",
        "Summarise what this customer has been buying, most recent first, as an embedding for next-item retrieval.",
        "Map the listed interactions, newest first, to a representation that retrieves the item this user wants next.",
    ),
))
register(Task(
    "Q2I", Kind.EMBEDDING, "search query -> matching item", "mrr@20", AnswerType.NONE,
    (
        "Embed this shopping query so that the products that satisfy it are its nearest neighbours.",
        "Encode the search request below for retrieving a product that fulfils it.",
        "Represent what this shopper is searching for, to look up items that match.",
        "Produce a retrieval vector for this product search.",
    ),
))
register(Task(
    "I2I", Kind.EMBEDDING, "item -> similar item", "ndcg@20", AnswerType.NONE,
    (
        "Embed this product from its title and category path so that comparable products sit nearby.",
        "Encode the item below to find other items a shopper would consider alike.",
        "Represent this product by its name and categories for similar-item lookup.",
        "Create a vector for this listing that retrieves look-alike products.",
    ),
))
register(Task(
    "QR", Kind.GENERATIVE, "query rewriting: make each marked turn of a dialogue self-contained",
    "bertscore_f1", AnswerType.FREE_TEXT,
    (
        "Rewrite the dialogue so every turn marked [rewrite] can be understood on its own: replace pronouns and "
        "vague references with what they point to. Copy unmarked turns unchanged.",
        "Some turns below lean on earlier context. Make each turn tagged [rewrite] explicit by naming the people, "
        "things, places or times it refers to; leave the other turns as they are.",
        "Resolve references in the conversation: for turns tagged [rewrite], substitute the referenced entities; "
        "reproduce all other turns verbatim.",
    ),
))
register(Task(
    "AVE", Kind.GENERATIVE, "attribute value extraction from a product listing", "triple_f1",
    AnswerType.ATTRIBUTE_JSON,
    (
        "Find the value of each requested attribute in the product listing. Reply with a JSON list of objects with "
        "keys attribute, value and source, where source names the listing field the value came from.",
        "Read the listing and extract the requested attributes. Answer as JSON: a list of "
        "{\"attribute\", \"value\", \"source\"} objects, one per occurrence.",
        "For every target attribute, report its value and the field (title, description, features, brand) that "
        "states it, as a JSON list of attribute/value/source objects.",
    ),
))
register(Task(
    "AG", Kind.GENERATIVE, "answer generation from product reviews", "bertscore_f1", AnswerType.FREE_TEXT,
    (
        "Answer the shopper's question using only what the reviews below say.",
        "Use the supporting reviews to write a short answer to the question.",
        "Write a helpful reply to the question, grounded in the given reviews.",
    ),
))
register(Task(
    "SR", Kind.GENERATIVE, "sequential recommendation: choose the next item among options", "recall@1",
    AnswerType.OPTION_LETTER,
    (
        "From this user's purchases (latest first), pick the option they are most likely to buy next. "
        "Reply with the option letter.",
        "Given the shopping history below, which candidate will this customer purchase next? Answer with a letter.",
        "Rank the candidates by how well they continue the user's history and give the letter of the best one.",
    ),
))
register(Task(
    "SA", Kind.GENERATIVE, "sentiment of a review on a 5-point scale", "macro_f1", AnswerType.OPTION_LETTER,
    (
        "How does the reviewer feel about the product? Choose one option and reply with its letter.",
        "Classify the sentiment of this review using the options below.",
        "Read the review and pick the option that matches the writer's opinion.",
    ),
))
register(Task(
    "UP", Kind.GENERATIVE, "user profile: summarise a user's preferences from their history",
    "bertscore_f1", AnswerType.FREE_TEXT,
    (
        "Describe this user's tastes from the ratings below: favourite categories, brands and what they avoid.",
        "Write a short preference profile of the user based on their rated history.",
        "Summarise what this customer likes and dislikes, citing the items they rated.",
    ),
))
register(Task(
    "AP", Kind.GENERATIVE, "answerability: can the reviews answer the question", "f1_yes", AnswerType.YES_NO,
    (
        "Do the reviews contain the information needed to answer the question? Reply yes or no.",
        "Decide whether the question can be answered from the given reviews. Answer yes or no.",
        "Is the question answerable using only the document? Output yes or no.",
    ),
))
register(Task(
    "PRP", Kind.GENERATIVE, "product relation prediction between two items", "macro_f1",
    AnswerType.OPTION_LETTER,
    (
        "How are these two products related? Pick the option that fits and reply with its letter.",
        "Judge the relation between product 1 and product 2 from their titles and choose an option.",
        "Choose the option that best describes how shoppers treat these two products.",
    ),
))
register(Task(
    "PM", Kind.GENERATIVE, "product matching: do two listings describe the same product", "f1_yes",
    AnswerType.YES_NO,
    (
        "Do these two listings from different shops describe the same product? Reply yes or no.",
        "Compare the two product records and answer yes if they are the same item, otherwise no.",
        "Are listing 1 and listing 2 the identical product? Output yes or no.",
    ),
))
register(Task(
    "IP", Kind.GENERATIVE, "item profile: describe an item's key facts", "bertscore_f1", AnswerType.FREE_TEXT,
    (
        "Introduce the product below and describe its main attributes.",
        "Write a short profile of this item: what it is, who makes it and what stands out.",
        "Describe the key facts about this product for a shopper who has never seen it.",
    ),
))

BUILTIN_TASKS: tuple[str, ...] = tuple(_REGISTRY)  # the 13 above, in registry order
