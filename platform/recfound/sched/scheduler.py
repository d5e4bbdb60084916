"""The scheduler's bookkeeping, without Ray: aggregate the ranks' validation losses into points,
hand out version-stamped counts per step, keep the history, save and restore the state.

Steps are 1-based. After training step e with e % eval_interval == 0 every rank evaluates and
reports its share of the per-task validation losses (loss sums and sample counts) for point e.
Step t uses the points of steps <= e(t) = ((t - 1) // eval_interval) * eval_interval, so it can be
served once that point is in (at once for t <= eval_interval). The actor in `actor.py` adds the
waiting and the Ray plumbing around this class.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from recfound.sched.policy import KindSchedule, KindSpec, SchedConfig

STATE_VERSION = 1


class NotReady(LookupError):
    """The counts of a step need a validation point that is not complete yet."""


@dataclass(frozen=True)
class ScheduleSpec:
    """What a run's scheduler needs: the task kinds, the run length, the ranks, the settings."""

    kinds: dict[str, KindSpec]
    total_steps: int
    world_size: int = 1
    eval_interval: int = 1
    config: SchedConfig = field(default_factory=SchedConfig)

    def __post_init__(self) -> None:
        for name in ("total_steps", "world_size", "eval_interval"):
            _integer(getattr(self, name), name, 1)
        if not self.kinds:
            raise ValueError("kinds must name at least one task kind")
        names = [task for spec in self.kinds.values() for task in spec.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique across kinds, got {names}")

    @property
    def task_names(self) -> list[str]:
        return [task for spec in self.kinds.values() for task in spec.tasks]

    def to_dict(self) -> dict[str, Any]:
        return {"kinds": {name: spec.to_dict() for name, spec in self.kinds.items()}, "total_steps": self.total_steps,
                "world_size": self.world_size, "eval_interval": self.eval_interval, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleSpec:
        kinds = {name: KindSpec(**spec) for name, spec in data["kinds"].items()}
        config = {"preset": LEGACY_PRESET, **data["config"]}  # a state saved before presets: the paper's formulas
        return cls(kinds, data["total_steps"], data["world_size"], data["eval_interval"], SchedConfig(**config))


LEGACY_PRESET = "paper"  # what runs saved before `sched.preset` existed computed


def _integer(value: Any, name: str, low: int, high: float = math.inf) -> int:
    """`value` as an int in [low, high], or a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        bounds = f"[{low}, {high}]" if high < math.inf else f">= {low}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def _check_mapping(label: str, mapping: Any, names: list[str]) -> None:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{label} must be a dict task -> value, got {type(mapping).__name__}")
    missing, unknown = set(names) - set(mapping), set(mapping) - set(names)
    if missing or unknown:
        raise ValueError(f"{label}: missing tasks {sorted(missing)}, unknown tasks {sorted(unknown)}")


class Scheduler:
    """Points from the ranks' reports, counts per step, history and state (see module doc)."""

    def __init__(self, spec: ScheduleSpec) -> None:
        self.spec = spec
        self.warmup_steps = spec.config.warmup_steps(spec.total_steps)
        self._kinds = {name: KindSchedule(kind, spec.config, self.warmup_steps, spec.eval_interval)
                       for name, kind in spec.kinds.items()}
        self._eval_steps: list[int] = []  # steps of the points that went in
        self._skipped: list[dict[str, Any]] = []  # {"step", "reason"} of points that could not
        self._done_through = 0  # the last evaluation step that went in or was skipped
        self._pending: dict[int, tuple[dict[str, float], dict[str, int]]] = {}

    @property
    def next_eval_step(self) -> int:
        return self._done_through + self.spec.eval_interval

    def report(self, step: int, rank: int, loss_sums: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, Any]:
        """Take one rank's share of point `step`: per task the sum of its validation losses and
        their number. Returns {"step", "complete", "skipped"}; "skipped" is the reason when the
        complete point could not be used (no samples of a task, a non-finite or non-positive loss)."""
        step = _integer(step, "step", 1, self.spec.total_steps)
        rank = _integer(rank, "rank", 0, self.spec.world_size - 1)
        if step != self.next_eval_step:
            raise ValueError(f"report for step {step}: the scheduler expects the point of step {self.next_eval_step} "
                             f"next (eval_interval={self.spec.eval_interval})")
        if rank in self._pending:
            raise ValueError(f"rank {rank} already reported the point of step {step}")
        names = self.spec.task_names
        _check_mapping("loss_sums", loss_sums, names)
        _check_mapping("counts", counts, names)
        bad = {task: n for task, n in counts.items() if isinstance(n, bool) or int(n) != n or n < 0}
        if bad:
            raise ValueError(f"counts must be integers >= 0, got {bad}")
        self._pending[rank] = ({t: float(loss_sums[t]) for t in names}, {t: int(counts[t]) for t in names})
        if len(self._pending) < self.spec.world_size:
            return {"step": step, "complete": False, "skipped": None}
        return {"step": step, "complete": True, "skipped": self._complete(step)}

    def _complete(self, step: int) -> str | None:
        reports = list(self._pending.values())
        self._pending.clear()
        self._done_through = step
        means, problems = {}, []
        for task in self.spec.task_names:
            sums, samples = [r[0][task] for r in reports], sum(r[1][task] for r in reports)
            if samples == 0:
                problems.append(f"{task}: no validation samples on any rank")
            elif not all(math.isfinite(s) for s in sums) or math.fsum(sums) <= 0:
                problems.append(f"{task}: loss sums {sums} over {samples} samples")
            else:
                means[task] = math.fsum(sums) / samples  # fsum: the same mean whatever the ranks' order
        if problems:
            reason = "; ".join(problems)
            self._skipped.append({"step": step, "reason": reason})
            return reason
        for schedule in self._kinds.values():
            schedule.add_point([means[task] for task in schedule.spec.tasks])
        self._eval_steps.append(step)
        return None

    def _due(self, step: int) -> int:
        return (step - 1) // self.spec.eval_interval * self.spec.eval_interval

    def ready(self, step: int) -> bool:
        """Whether the counts of `step` can be served now."""
        return self._due(_integer(step, "step", 1, self.spec.total_steps)) <= self._done_through

    def waiting_for(self, step: int) -> str:
        """What the counts of `step` are waiting for, in words."""
        missing = sorted(set(range(self.spec.world_size)) - set(self._pending))
        return (f"the counts of step {step} need the validation point of step {self._due(step)}; the scheduler is at "
                f"the point of step {self.next_eval_step}, which ranks {missing} of {self.spec.world_size} "
                f"have not reported")

    def counts(self, step: int) -> dict[str, Any]:
        """{"step", "based_on_step" (the latest point used, 0 for none), "counts" and "ratios" per kind and task}."""
        if not self.ready(step):
            raise NotReady(self.waiting_for(step))
        step = int(step)
        points = bisect_right(self._eval_steps, self._due(step))
        result: dict[str, Any] = {"step": step, "based_on_step": self._eval_steps[points - 1] if points else 0,
                                  "counts": {}, "ratios": {}}
        for kind, schedule in self._kinds.items():
            tasks = schedule.spec.tasks
            result["ratios"][kind] = dict(zip(tasks, schedule.ratios(step, points).tolist()))
            result["counts"][kind] = dict(zip(tasks, schedule.counts(step, points).tolist()))
        return result

    @property
    def last_ready_step(self) -> int:
        """The last step whose counts can be served now."""
        return min(self.spec.total_steps, self._done_through + self.spec.eval_interval)

    def _change_steps(self) -> list[int]:
        """The servable steps at which the ratios may change: 1, after each point, after the warm-up."""
        candidates = {1, self.warmup_steps + 1, *(e + 1 for e in self._eval_steps)}
        return sorted(step for step in candidates if step <= self.last_ready_step)

    def history(self) -> dict[str, Any]:
        """Everything so far, JSON-able: per kind the per-point losses and terms (see
        KindSchedule.history) and the ratios in force from each of `steps` on (for plots)."""
        steps = self._change_steps()
        kinds = {}
        for kind, schedule in self._kinds.items():
            applied = [schedule.ratios(s, bisect_right(self._eval_steps, self._due(s))).tolist() for s in steps]
            kinds[kind] = {**schedule.history(), "steps": steps, "ratios": applied}
        return {"eval_steps": list(self._eval_steps), "skipped": list(self._skipped), "warmup_steps": self.warmup_steps,
                "total_steps": self.spec.total_steps, "last_ready_step": self.last_ready_step,
                "mode": self.spec.config.mode, "kinds": kinds}

    def state(self) -> dict[str, Any]:
        """The state as a JSON-able dict: the spec and the complete points (not half-reported ones)."""
        return {"version": STATE_VERSION, "spec": self.spec.to_dict(), "done_through": self._done_through,
                "eval_steps": list(self._eval_steps), "skipped": list(self._skipped),
                "losses": {kind: schedule.losses.tolist() for kind, schedule in self._kinds.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], world_size: int | None = None) -> Scheduler:
        """A scheduler that continues exactly where `state` (from `state()`) left off; `world_size`: the
        ranks that report the points from now on, when not those of the state (an elastic run that
        restarted on another number of workers: a point is the same whoever evaluates its shares)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"scheduler state version {state.get('version')!r} is not {STATE_VERSION}")
        spec = ScheduleSpec.from_dict(state["spec"])
        scheduler = cls(spec if world_size is None else replace(spec, world_size=world_size))
        for kind, schedule in scheduler._kinds.items():
            rows = state["losses"][kind]
            if len(rows) != len(state["eval_steps"]):
                raise ValueError(f"scheduler state: {len(rows)} loss rows of kind {kind} "
                                 f"for {len(state['eval_steps'])} points")
            for row in rows:
                schedule.add_point(np.asarray(row, dtype=np.float64))
        scheduler._eval_steps = list(state["eval_steps"])
        scheduler._skipped = list(state["skipped"])
        scheduler._done_through = state["done_through"]
        return scheduler
