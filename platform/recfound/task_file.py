"""Task files: tasks declared in YAML, registered after the 13 built-ins without a code change.

```yaml
version: 1
tasks:
  - name: MIM                      # upper-case identifier, not a built-in task's name
    kind: generative               # embedding | generative
    description: masked item in a history -> that item
    metric: recall@1               # one the evaluation scores this kind and answer type with
    answer_type: option_letter     # none (embedding) | free_text | option_letter | yes_no | label_set | attribute_json
    labels: []                     # label_set tasks only
    instructions: [..., ..., ...]  # at least 3 distinct wordings
```

A data root's `tasks.yaml` is registered wherever the root is read (`load_root_tasks`), a run config's
`data.tasks_file` when the config is loaded. The whole file is checked before any of its tasks is
registered; each error is one line naming the file, the task (index and name) and the key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import yaml

from recfound import storage
from recfound.tasks import BUILTIN_TASKS, AnswerType, Kind, Task, all_tasks, register_all
from recfound.yaml_limits import MAX_BYTES, YamlLimitError, load_limited

ROOT_TASK_FILE = "tasks.yaml"  # <root>/tasks.yaml, next to the split folders
VERSION = 1
FILE_KEYS = ("version", "tasks")
TASK_KEYS = tuple(item.name for item in fields(Task))  # name, kind, description, metric, answer_type, instructions, labels
OPTIONAL_KEYS = ("labels",)
MIN_INSTRUCTIONS = 3
# What recfound.eval.metrics scores each generative answer type with (label_set tasks get accuracy).
GENERATIVE_METRICS: dict[AnswerType, tuple[str, ...]] = {
    AnswerType.FREE_TEXT: ("bertscore_f1",),
    AnswerType.OPTION_LETTER: ("recall@1", "macro_f1"),
    AnswerType.YES_NO: ("f1_yes",),
    AnswerType.LABEL_SET: ("accuracy",),
    AnswerType.ATTRIBUTE_JSON: ("triple_f1",),
}
RANKING_METRIC = re.compile(r"(mrr|ndcg)@[1-9][0-9]*")  # embedding tasks: MRR@K or NDCG@K


class TaskFileError(ValueError):
    """A bad task file: `<file>: <where>: <key>: <reason and what to do>` (the parts that apply)."""


def _error(source: str, key: str, reason: str, where: str = "") -> TaskFileError:
    return TaskFileError(": ".join(part for part in (source, where, key, reason) if part))


def read_task_file(location: storage.Location) -> tuple[Task, ...]:
    """The tasks a task file (a local path or URI) declares, checked, in file order; nothing is registered."""
    source = str(location)
    data = _read_yaml(location)
    if not isinstance(data, Mapping):
        raise _error(source, "", f"expected a mapping with the keys {', '.join(FILE_KEYS)}, got {_show(data)}")
    _check_keys(data, FILE_KEYS, (), source, "", "a task file")
    if type(data["version"]) is not int or data["version"] != VERSION:
        raise _error(source, "version", f"unsupported version {_show(data['version'])}; this recfound reads "
                                               f"task files of version {VERSION} (write 'version: {VERSION}')")
    entries = data["tasks"]
    if not isinstance(entries, list):
        raise _error(source, "tasks", f"expected a list of task declarations, got {_show(entries)}")
    return tasks_from_entries(entries, source)


def tasks_from_entries(entries: Sequence[Any], source: str) -> tuple[Task, ...]:
    """The tasks of a task file's `tasks` list, checked (errors name `source`)."""
    tasks: list[Task] = []
    first: dict[str, int] = {}
    for index, entry in enumerate(entries):
        task = _task(entry, source, index)
        if task.name in first:
            raise _error(source, "name", f"{task.name} is declared twice (also tasks[{first[task.name]}]); "
                                                "give each task its own name", _where(index, task.name))
        first[task.name] = index
        tasks.append(task)
    return tuple(tasks)


def task_entry(task: Task) -> dict[str, Any]:
    """A task as a task file declares it (plain YAML/JSON data)."""
    return {"name": task.name, "kind": task.kind.value, "description": task.description, "metric": task.metric,
            "answer_type": task.answer_type.value, "labels": list(task.labels), "instructions": list(task.instructions)}


def load_task_file(location: storage.Location) -> tuple[Task, ...]:
    """Read a task file and register its tasks after those already registered, in file order. Tasks
    registered before as the very same task are skipped (loading a file twice changes nothing); a name
    registered as a different task is an error, and then none of the file's tasks is registered."""
    tasks = read_task_file(location)
    known = {task.name: task for task in all_tasks()}
    for index, task in enumerate(tasks):
        if known.get(task.name, task) != task:
            raise _error(str(location), "name", f"a different task {task.name} is already registered (by "
                                                       "another task file or register()); rename one of them",
                                _where(index, task.name))
    register_all(tasks)
    return tasks


def root_task_file(root: storage.Location) -> str:
    """Where a data root's task file is: `<root>/tasks.yaml`."""
    return storage.join(root, ROOT_TASK_FILE)


def load_root_tasks(root: storage.Location) -> tuple[Task, ...]:
    """Register the tasks of `<root>/tasks.yaml` when the root has one (see `load_task_file`)."""
    location = root_task_file(root)
    return load_task_file(location) if storage.is_file(location) else ()


# --- checks ---------------------------------------------------------------------------------------


def _read_yaml(location: storage.Location) -> Any:
    source = str(location)
    try:
        if storage.size(location) > MAX_BYTES:  # before reading it into memory
            raise _error(source, "", f"larger than {MAX_BYTES // 1024} KiB; a task file is a few KB")
        return load_limited(storage.read_bytes(location).decode("utf-8"))
    except OSError as error:
        raise _error(source, "", f"cannot read the task file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise _error(source, "", f"not UTF-8 text (byte {error.start}); save the file as UTF-8") from None
    except YamlLimitError as error:
        raise _error(source, "", f"refused: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise _error(source, "", f"{where}invalid YAML: {problem}") from None


def _task(entry: Any, source: str, index: int) -> Task:
    """One checked declaration of the `tasks` list."""
    name = entry.get("name") if isinstance(entry, Mapping) else None
    where = _where(index, name if isinstance(name, str) else None)
    if not isinstance(entry, Mapping):
        raise _error(source, "", f"expected a mapping of {', '.join(TASK_KEYS)}, got {_show(entry)}", where)
    _check_keys(entry, TASK_KEYS, OPTIONAL_KEYS, source, where, "a task")

    def fail(key: str, reason: str) -> TaskFileError:
        return _error(source, key, reason, where)

    name = _text(entry, "name", fail)
    if not name.isidentifier() or name != name.upper():
        raise fail("name", f"{name!r} is not an upper-case identifier; use letters, digits and '_', e.g. MIM")
    if name in BUILTIN_TASKS:
        raise fail("name", f"{name} is a built-in task; give the new task another name")
    kind = _choice(entry, "kind", Kind, fail)
    answer_type = _choice(entry, "answer_type", AnswerType, fail)
    if kind is Kind.EMBEDDING and answer_type is not AnswerType.NONE:
        raise fail("answer_type", f"embedding tasks have answer type none (got {answer_type.value})")
    if kind is Kind.GENERATIVE and answer_type is AnswerType.NONE:
        raise fail("answer_type", f"generative tasks need one of {', '.join(t.value for t in GENERATIVE_METRICS)}")
    metric = _text(entry, "metric", fail)
    if kind is Kind.EMBEDDING and not RANKING_METRIC.fullmatch(metric):
        raise fail("metric", f"{metric!r} does not score embedding tasks; use mrr@K or ndcg@K (e.g. mrr@20)")
    if kind is Kind.GENERATIVE and metric not in GENERATIVE_METRICS[answer_type]:
        raise fail("metric", f"{metric!r} does not score {answer_type.value} answers; use "
                             f"{' or '.join(GENERATIVE_METRICS[answer_type])}")
    labels = _texts(entry, "labels", fail) if entry.get("labels") is not None else ()
    if labels and answer_type is not AnswerType.LABEL_SET:
        raise fail("labels", "only label_set tasks have labels; remove them or set answer_type: label_set")
    if answer_type is AnswerType.LABEL_SET and len(set(labels)) < 2:
        raise fail("labels", f"a label_set task needs at least 2 distinct labels (got {len(set(labels))})")
    instructions = _texts(entry, "instructions", fail)
    if len(set(instructions)) < MIN_INSTRUCTIONS:
        raise fail("instructions", f"give at least {MIN_INSTRUCTIONS} distinct wordings (got "
                                   f"{len(set(instructions))})")
    return Task(name, kind, _text(entry, "description", fail), metric, answer_type, instructions, labels)


def _check_keys(data: Mapping, keys: Sequence[str], optional: Sequence[str], source: str, where: str,
                what: str) -> None:
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f"did you mean {close[0]}?" if close else f"{what} has the keys {', '.join(keys)}"
            raise _error(source, str(key), f"unknown key ({hint})", where)
    for key in keys:
        if key not in data and key not in optional:
            raise _error(source, key, f"missing; {what} needs the keys "
                                             f"{', '.join(k for k in keys if k not in optional)}", where)


def _text(entry: Mapping, key: str, fail: Any) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise fail(key, f"expected a non-empty string, got {_show(value)}")
    return value


def _texts(entry: Mapping, key: str, fail: Any) -> tuple[str, ...]:
    value = entry[key]
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise fail(key, f"expected a list of non-empty strings, got {_show(value)}")
    return tuple(value)


def _choice(entry: Mapping, key: str, enum: type, fail: Any) -> Any:
    value = entry[key]
    try:
        return enum(value)
    except ValueError:
        raise fail(key, f"{_show(value)} is not one of {', '.join(item.value for item in enum)}") from None


def _where(index: int, name: str | None) -> str:
    return f"tasks[{index}] ({name})" if name else f"tasks[{index}]"


def _show(value: Any) -> str:
    text = "null" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
