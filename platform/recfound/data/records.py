"""The record schema of one task and the checks that make a parsed JSON object a valid record.

Generative record: {"instruction", "input", "options"?, "output"}.
Embedding record:  {"instruction", "query", "positive", "negatives"?}.
Both may carry an "id" (string) and a "task" (must equal the file's task).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from recfound.tasks import AnswerType, Kind, Task

GENERATIVE_FIELDS = ("instruction", "input", "options", "output")
EMBEDDING_FIELDS = ("instruction", "query", "positive", "negatives")
COMMON_FIELDS = ("id", "task")
INPUT_FIELDS = {Kind.EMBEDDING: ("instruction", "query"), Kind.GENERATIVE: ("instruction", "input", "options")}
OPTIONAL_FIELDS = {"options", "negatives", *COMMON_FIELDS}
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
TRIPLE_KEYS = ("attribute", "value", "source")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one record: the field it concerns and what is wrong."""

    field: str
    message: str


def fields_of(task: Task) -> tuple[str, ...]:
    """The record fields of a task's kind, in their canonical order."""
    return EMBEDDING_FIELDS if task.kind is Kind.EMBEDDING else GENERATIVE_FIELDS


def check_record(obj: Any, task: Task) -> Problem | None:
    """The first problem of `obj` as a record of `task`, or None when it is valid."""
    if not isinstance(obj, dict):
        return Problem("<record>", f"expected a JSON object, got {type(obj).__name__}")
    allowed = {*fields_of(task), *COMMON_FIELDS}  # a field of the other kind is refused, not dropped unread
    for key, value in obj.items():
        if key not in allowed and not (key in OPTIONAL_FIELDS and value is None):  # (null: a frame of both kinds)
            article = "an" if task.kind is Kind.EMBEDDING else "a"
            return Problem(key, f"unknown field for {article} {task.kind.value} record (allowed: "
                                f"{', '.join(sorted(allowed))})")
    if "task" in obj and obj["task"] != task.name:
        return Problem("task", f"record says task {obj['task']!r} but the file holds {task.name}")
    if "id" in obj and not isinstance(obj["id"], (str, int)):
        return Problem("id", "must be a string or an integer")
    return check_inputs(obj, task) or _check_target(obj, task)


def check_inputs(obj: dict, task: Task) -> Problem | None:
    """The first problem of what a model reads of a record of `task`: the instruction and the query, or the
    instruction, the input and the options. Requests to a served model, which carry no answers or
    documents, are checked by this too."""
    for name in INPUT_FIELDS[task.kind]:
        problem = _check_text_list(obj.get(name), name) if name in OPTIONAL_FIELDS else \
            _check_field(obj, name, allow_empty=(name == "input"))
        if problem:
            return problem
    if task.answer_type is AnswerType.OPTION_LETTER and not obj.get("options"):
        return Problem("options", f"task {task.name} answers with an option letter: options are required")
    return None


def _check_target(obj: dict, task: Task) -> Problem | None:
    """The first problem of what a record teaches: its documents, or its answer."""
    if task.kind is Kind.EMBEDDING:
        return _check_field(obj, "positive") or _check_text_list(obj.get("negatives"), "negatives")
    return _check_field(obj, "output") or _check_answer(obj, task)


def _check_field(obj: dict, name: str, allow_empty: bool = False) -> Problem | None:
    return Problem(name, "missing field") if name not in obj else _check_text(obj[name], name, allow_empty)


def _check_text(value: Any, name: str, allow_empty: bool = False) -> Problem | None:
    if not isinstance(value, str):
        return Problem(name, f"expected a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        return Problem(name, "empty text")
    return None


def _check_text_list(value: Any, name: str) -> Problem | None:
    if value is None:
        return None
    if not isinstance(value, list):
        return Problem(name, f"expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        problem = _check_text(item, f"{name}[{i}]")
        if problem:
            return problem
    if name == "options" and len(value) > len(OPTION_LETTERS):
        return Problem(name, f"at most {len(OPTION_LETTERS)} options")
    return None


def option_letter(answer: str, options: list[str]) -> str | None:
    """The option letter an answer names ("B" or "B: text of B"), or None if it names none."""
    answer = answer.strip()
    letter = answer[:1]
    index = OPTION_LETTERS.find(letter) if letter else -1
    if index < 0 or index >= len(options):
        return None
    rest = answer[1:].strip()
    if rest and rest.lstrip(":.) ").strip() != options[index].strip():
        return None
    return letter


def _check_answer(obj: dict, task: Task) -> Problem | None:
    output, options = obj["output"], obj.get("options")
    kind = task.answer_type
    if kind is AnswerType.OPTION_LETTER:  # (check_inputs saw that there are options)
        if option_letter(output, options) is None:
            letters = OPTION_LETTERS[: len(options)]
            return Problem("output", f"answer {output!r} is not among the options (expected one of {', '.join(letters)})")
    elif kind is AnswerType.YES_NO:
        if output.strip().lower() not in ("yes", "no"):
            return Problem("output", f"expected 'yes' or 'no', got {output!r}")
    elif kind is AnswerType.LABEL_SET:
        if output.strip().lower() not in {label.lower() for label in task.labels}:
            return Problem("output", f"{output!r} is not one of the labels {', '.join(task.labels)}")
    elif kind is AnswerType.ATTRIBUTE_JSON:
        return _check_triples(output)
    return None


def _check_triples(output: str) -> Problem | None:
    try:
        triples = json.loads(output)
    except json.JSONDecodeError as err:
        return Problem("output", f"expected a JSON list of attribute/value/source objects: {err.msg}")
    if not isinstance(triples, list):
        return Problem("output", "expected a JSON list of attribute/value/source objects")
    for i, triple in enumerate(triples):
        if not isinstance(triple, dict) or set(triple) != set(TRIPLE_KEYS):
            return Problem("output", f"item {i} must be an object with exactly the keys {', '.join(TRIPLE_KEYS)}")
        if not all(isinstance(triple[k], str) for k in TRIPLE_KEYS):
            return Problem("output", f"item {i}: attribute, value and source must be strings")
    return None


def normalize(obj: dict, task: Task) -> dict:
    """A valid record with every field of its kind present, in canonical order (optional lists default to [])."""
    record = {"task": task.name, "id": str(obj.get("id", ""))}
    for name in fields_of(task):
        record[name] = obj.get(name, []) if name in OPTIONAL_FIELDS else obj[name]
    return record
