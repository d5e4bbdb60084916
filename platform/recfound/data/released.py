"""The RecFound authors' released row format, converted to ours.

Embedding rows: {"query": T, "pos": [T, ...], "neg": [T, ...], "task": name}, where each text T is
either a string or an [instruction, text] pair. One of our records is made per positive.
Generative rows: {"text": [user, assistant, user, assistant, ...], "task": name}. The last user turn
becomes the instruction, the last assistant turn the output, and earlier turns (if any) are kept
as a transcript in the input. For option-letter tasks (SR, SA, PRP) the option lines of the last
user turn ("A: ...", "(B) ...", "C. ...", in letter order) become `options` and leave the
instruction, and a quoted answer ('"B"') is unquoted.
"""

from __future__ import annotations

import re
from typing import Any

from recfound.data.records import OPTION_LETTERS
from recfound.tasks import AnswerType, Kind, Task, all_tasks

# Long names the authors' files may use for a task; registry names are always accepted too.
TASK_ALIASES = {
    "user2item": "U2I", "query2item": "Q2I", "item2item": "I2I",
    "query_rewriting": "QR", "attribute_value_extraction": "AVE", "answer_generation": "AG",
    "sequential_recommendation": "SR", "sentiment_analysis": "SA", "user_profile": "UP",
    "answerability_prediction": "AP", "product_relation_prediction": "PRP",
    "product_matching": "PM", "item_profile": "IP",
}


class ReleasedRowError(ValueError):
    """A released-format row that cannot be converted; `field` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def is_released_row(obj: Any) -> bool:
    """True for a row in the authors' format (it has 'pos' or 'text' instead of our fields)."""
    return isinstance(obj, dict) and ("pos" in obj or "text" in obj) and "instruction" not in obj


def resolve_task_name(name: Any) -> Task:
    """The registry task a released 'task' value names (case-insensitive, long aliases allowed)."""
    if not isinstance(name, str) or not name.strip():
        raise ReleasedRowError("task", "missing or empty task name")
    key = name.strip()
    by_upper = {t.name: t for t in all_tasks()}
    canonical = TASK_ALIASES.get(key.lower().replace(" ", "_").replace("-", "_"), key.upper())
    if canonical not in by_upper:
        raise ReleasedRowError("task", f"unknown task {name!r}; known tasks: {', '.join(by_upper)}")
    return by_upper[canonical]


# Matched against a stripped line: no pattern part may backtrack over whitespace (a lazy `(.+?)\s*$` did,
# quadratically: one 60 KB line took 47 s).
OPTION_LINE = re.compile(r"\(?([A-Z])[):.]\s*(\S.*)")
OPTIONS_HEADER = re.compile(r"[-\u2013]*\s*options\s*:?", re.IGNORECASE)


def convert_row(obj: dict, task: Task | None = None) -> list[dict]:
    """Our records for one released row, of `task` when given (the row's own 'task', if any, must agree)."""
    if task is None:
        task = resolve_task_name(obj.get("task"))
    elif obj.get("task") is not None and resolve_task_name(obj["task"]) is not task:
        raise ReleasedRowError("task", f"row says task {obj['task']!r} but the file holds {task.name}")
    if task.kind is Kind.EMBEDDING:
        return _convert_embedding(obj, task)
    return [_convert_generative(obj, task)]


def _split_text(value: Any, field: str) -> tuple[str, str]:
    """(instruction, text) of a released text: a string or an [instruction, text] pair."""
    if isinstance(value, str):
        return "", value
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    raise ReleasedRowError(field, "expected a string or an [instruction, text] pair")


def _convert_embedding(obj: dict, task: Task) -> list[dict]:
    instruction, query = _split_text(obj.get("query"), "query")
    positives = obj.get("pos")
    if not isinstance(positives, list) or not positives:
        raise ReleasedRowError("pos", "expected a non-empty list of texts")
    negatives = obj.get("neg") or []
    if not isinstance(negatives, list):
        raise ReleasedRowError("neg", "expected a list of texts")
    negative_texts = [_split_text(n, f"neg[{i}]")[1] for i, n in enumerate(negatives)]
    records = []
    for i, positive in enumerate(positives):
        record = {"task": task.name, "instruction": instruction or task.instructions[0], "query": query,
                  "positive": _split_text(positive, f"pos[{i}]")[1]}
        if negative_texts:
            record["negatives"] = negative_texts
        records.append(record)
    return records


def _convert_generative(obj: dict, task: Task) -> dict:
    turns = obj.get("text")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2 or not all(isinstance(t, str) for t in turns):
        raise ReleasedRowError("text", "expected an even-length list of strings [user, assistant, ...]")
    earlier = [f"{'User' if i % 2 == 0 else 'Assistant'}: {turn}" for i, turn in enumerate(turns[:-2])]
    record = {"task": task.name, "instruction": turns[-2], "input": "\n".join(earlier), "output": turns[-1]}
    if task.answer_type is AnswerType.OPTION_LETTER:
        record["instruction"], record["options"] = split_options(turns[-2])
        record["output"] = turns[-1].strip().strip("\"'")
    return record


def split_options(prompt: str) -> tuple[str, list[str]]:
    """(the prompt without its option lines, the option texts): the longest run of lines lettered
    A, B, C, ... in order (an 'Options:' line just before it goes too). No run of 2+ -> (prompt, [])."""
    lines = prompt.splitlines()
    best: tuple[int, int] = (0, 0)
    start = 0
    while start < len(lines):
        end = start
        while end < len(lines) and _option_letter(lines[end]) == OPTION_LETTERS[end - start: end - start + 1]:
            end += 1
        if end - start > best[1] - best[0]:
            best = (start, end)
        start = max(end, start + 1)
    first, last = best
    if last - first < 2:
        return prompt, []
    options = [OPTION_LINE.fullmatch(line.strip()).group(2) for line in lines[first:last]]
    if first > 0 and OPTIONS_HEADER.fullmatch(lines[first - 1].strip()):
        first -= 1
    return "\n".join(lines[:first] + lines[last:]).strip(), options


def _option_letter(line: str) -> str | None:
    match = OPTION_LINE.fullmatch(line.strip())
    return match.group(1) if match else None
