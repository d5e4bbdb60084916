"""Which ratios a step uses: the scheduling mode, the preset, the warm-up, and the counts for one task kind.

numpy only. Modes: "s2sched" (the paper), "uniform" (the "w/o S2Sched" ablation: equal ratios),
"pool_size" (ratios proportional to the tasks' pool sizes). Presets: "paper" (Eqs. 3-6, plus any of the
option fields) and "authors" (the authors' code; see `presets.py`). The S2Sched terms are computed in
every mode so the logs and plots of an ablation show what S2Sched would have done.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from recfound.sched.incremental import IncrementalS2Sched
from recfound.sched.presets import authors_options, preset_conflict
from recfound.sched.s2sched import Terms, allocate, check_params, equal_ratios

MODES = ("s2sched", "uniform", "pool_size")


@dataclass(frozen=True)
class SchedConfig:
    """S2Sched hyper-parameters (paper defaults), the preset, and the authors'-code options that the
    `paper` preset takes one by one (default off; the `authors` preset sets them all)."""

    window: int = 64
    temperature: float = 10.0
    warmup_ratio: float = 0.1
    mode: str = "s2sched"
    preset: str = "authors"
    logit_scale: bool = False
    min_ratio: float = 0.0
    size_prior: bool = False
    max_loss_slope: bool = False

    def __post_init__(self) -> None:
        check_params(self.window, self.temperature)
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be in [0, 1], got {self.warmup_ratio!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        conflict = preset_conflict(self.preset, asdict(self))
        if conflict:
            raise ValueError(f"{conflict[0]} {conflict[1]}")

    def warmup_steps(self, total_steps: int) -> int:
        """ceil(warmup_ratio * total_steps), with the ratio read as the decimal it was written as
        (0.1 * 70 is 7.000000000000001 in floats, which would round up to 8)."""
        return math.ceil(Fraction(repr(float(self.warmup_ratio))) * total_steps)  # float(): numpy scalars too

    def options(self, num_tasks: int, pool_sizes: tuple[int, ...] | None, warmup_points: int) -> dict[str, Any]:
        """The `s2sched_terms` options of one task kind (pool sizes: needed by `authors` and `size_prior`)."""
        if self.preset == "authors":
            return authors_options(num_tasks, pool_sizes, warmup_points)
        return {"logit_scale": self.logit_scale, "min_ratio": self.min_ratio, "max_loss_slope": self.max_loss_slope,
                "size_prior": pool_sizes if self.size_prior else None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KindSpec:
    """One task kind: its task names (in order), its per-step batch size, its tasks' pool sizes."""

    tasks: tuple[str, ...]
    batch_size: int
    pool_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty list of distinct names, got {list(self.tasks)}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        object.__setattr__(self, "batch_size", int(self.batch_size))  # numpy ints (from Tune) become plain ints
        if self.pool_sizes is not None:
            object.__setattr__(self, "pool_sizes", tuple(self.pool_sizes))
            if len(self.pool_sizes) != len(self.tasks) or any(int(n) != n or n < 1 for n in self.pool_sizes):
                raise ValueError(f"pool_sizes must be one integer >= 1 per task, got {list(self.pool_sizes)}")

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "batch_size": self.batch_size,
                "pool_sizes": None if self.pool_sizes is None else list(self.pool_sizes)}


class _Rows:
    """A growing [rows, width] float array (NaN for a missing row)."""

    def __init__(self, width: int) -> None:
        self._data, self._count = np.empty((16, width)), 0

    def append(self, row: np.ndarray | None) -> None:
        if self._count == len(self._data):
            self._data = np.vstack([self._data, np.empty_like(self._data)])
        self._data[self._count] = np.nan if row is None else row
        self._count += 1

    @property
    def array(self) -> np.ndarray:
        return self._data[: self._count]


def _json_rows(array: np.ndarray) -> list:
    """Rows as lists of floats, a row of NaN (a term not defined yet) as None."""
    return [None if np.isnan(row).all() else row.tolist() for row in array]


class KindSchedule:
    """One task kind's scheduler: S2Sched terms per point, and the ratios and counts per step."""

    TERMS = ("alpha", "inter", "intra", "ratios")

    def __init__(self, spec: KindSpec, config: SchedConfig, warmup_steps: int, eval_interval: int = 1) -> None:
        """warmup_steps: steps with equal ratios; eval_interval: steps per validation point (with the
        warm-up, it tells the `authors` preset the points its first scheduled step sees)."""
        needs = [reason for reason, on in (("mode pool_size", config.mode == "pool_size"),
                                           ("size_prior", config.size_prior), ("preset authors", config.preset == "authors"))
                 if on]
        if spec.pool_sizes is None and needs:
            raise ValueError(f"{' and '.join(needs)} need(s) the pool sizes of tasks {list(spec.tasks)}")
        self.spec, self.config, self.warmup_steps = spec, config, warmup_steps
        options = config.options(len(spec.tasks), spec.pool_sizes, warmup_steps // eval_interval)
        self.estimator = IncrementalS2Sched(len(spec.tasks), config.window, config.temperature, **options)
        k = len(spec.tasks)
        self._losses = _Rows(k)
        self._terms = {name: _Rows(k) for name in self.TERMS}
        self._beta: list[float | None] = []

    @property
    def losses(self) -> np.ndarray:
        """[points, K]: the validation losses of every point so far."""
        return self._losses.array

    def add_point(self, losses: Any) -> Terms:
        """Add one point's validation losses (one per task, in spec order) and record its terms."""
        terms = self.estimator.add(losses)
        self._losses.append(np.asarray(losses, dtype=np.float64))
        for name, rows in self._terms.items():
            rows.append(getattr(terms, name))
        self._beta.append(terms.beta)
        return terms

    def ratios(self, step: int, points: int) -> np.ndarray:
        """The ratios training step `step` (1-based) uses when the first `points` points are known."""
        if self.config.mode == "pool_size":
            sizes = np.asarray(self.spec.pool_sizes, dtype=np.float64)
            return sizes / sizes.sum()
        if self.config.mode == "uniform" or step <= self.warmup_steps or points < 2:
            return equal_ratios(len(self.spec.tasks))
        return self._terms["ratios"].array[points - 1].copy()

    def counts(self, step: int, points: int) -> np.ndarray:
        """Records per task in step `step`'s batch (sums to the batch size)."""
        return allocate(self.spec.batch_size, self.ratios(step, points))

    def history(self) -> dict[str, Any]:
        """Per point: the losses, the terms (None before they exist), beta and the S2Sched ratios."""
        terms = {("s2sched" if name == "ratios" else name): _json_rows(rows.array)
                 for name, rows in self._terms.items()}
        return {"tasks": list(self.spec.tasks), "losses": self.losses.tolist(), **terms, "beta": list(self._beta)}
