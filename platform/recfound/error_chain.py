"""Every error behind an error: its causes and contexts, the error a Ray task raised, and the failures of Ray
Train workers it carries; and the first line of an error's message."""

from __future__ import annotations


def error_chain(error: BaseException) -> list[BaseException]:
    """`error` first, then what it wraps (`__cause__`, `__context__`, a `RayTaskError`'s `cause`, Ray Train's
    `worker_failures`), each once."""
    seen: list[BaseException] = []
    todo = [error]
    while todo:
        link = todo.pop(0)
        if link is None or any(link is known for known in seen):
            continue
        seen.append(link)
        task_cause = getattr(link, "cause", None)  # Ray's RayTaskError: what the task raised
        todo += [link.__cause__, link.__context__, task_cause if isinstance(task_cause, BaseException) else None]
        todo += list((getattr(link, "worker_failures", None) or {}).values())
    return seen


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when the message is empty): what one-line
    reports quote of a library's multi-line error."""
    return (str(error).strip() or type(error).__name__).splitlines()[0]
