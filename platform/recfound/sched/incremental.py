"""S2Sched one point at a time, with the numbers of `s2sched_terms` on the history so far.

Per point: the slopes come from a ring buffer of the last L normalized losses (O(K * L)), the
intra-task denominators from a ring buffer of the last L slopes (O(K * L)), and Eq. 5's softmax over
the whole slope history from `ExpSum` (cost set by the spread of m(k), not by t) and a compensated
running sum of its denominator. numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recfound.sched.expsum import ExpSum
from recfound.sched.s2sched import (Terms, check_losses, check_params, combine, equal_ratios, make_options,
                                    window_slope)


class _CompensatedSum:
    """A running sum with Neumaier compensation (stays within a few ulps of math.fsum)."""

    def __init__(self) -> None:
        self._total, self._compensation = 0.0, 0.0

    def add(self, value: float) -> None:
        total = self._total + value
        if abs(self._total) >= abs(value):
            self._compensation += (self._total - total) + value
        else:
            self._compensation += (value - total) + self._total
        self._total = total

    @property
    def value(self) -> float:
        return self._total + self._compensation


class IncrementalS2Sched:
    """Takes one row of K validation losses per point and returns the ratios for the next step."""

    def __init__(self, num_tasks: int, window: int, temperature: float, **options: Any) -> None:
        check_params(window, temperature)
        self.options = make_options(**options)
        self.options.check_tasks(num_tasks)
        self.num_tasks, self.window, self.temperature = num_tasks, window, temperature
        self.points = 0
        self.terms = Terms(equal_ratios(num_tasks))
        self._first: np.ndarray | None = None
        self._fitted = 0  # rows in the slope fits so far: every point, or all but the first (first_point_baseline)
        self._losses = np.zeros((window, num_tasks + 1))  # normalized losses + their row maximum
        self._abs_alphas = np.zeros((window, num_tasks))  # |alpha(p)| of point p at row p % L
        self._m = ExpSum()  # m(k) of the slope history of Eq. 5
        self._big_m = _CompensatedSum()

    def add(self, losses: Any) -> Terms:
        """Add the losses of the next point (shape [K], finite, > 0) and return the new terms."""
        row = check_losses(losses, "losses", ndim=1)
        if len(row) != self.num_tasks:
            raise ValueError(f"losses has {len(row)} values for {self.num_tasks} tasks")
        first = self._first is None
        if first:
            self._first = row.copy()  # the caller may reuse its buffer
        if not (first and self.options.first_point_baseline):
            normalized = row / self._first
            self._losses[self._fitted % self.window] = np.append(normalized, normalized.max())
            self._fitted += 1
        self.points += 1
        if self.points >= 2:
            self.terms = self._next_terms(self._slopes())
        return self.terms

    def _slopes(self) -> np.ndarray:
        """Slopes over the last min(fitted, L) fitted rows of each ring column (ring rows are in point order
        until the ring is full; afterwards the oldest row is the next one to be overwritten)."""
        if self._fitted < self.window:
            return window_slope(self._losses[: self._fitted])
        return window_slope(np.roll(self._losses, -(self._fitted % self.window), axis=0))

    def _next_terms(self, slopes: np.ndarray) -> Terms:
        alpha, max_loss_slope = slopes[:-1], slopes[-1]
        points, options = self.points, self.options
        self._abs_alphas[points % self.window] = np.abs(alpha)
        if options.max_loss_slope:
            m, big_m = max_loss_slope, abs(max_loss_slope)
        else:
            m, big_m = alpha.max(), np.abs(alpha).max()
        if points >= options.slope_history_start:
            self._m.append(float(m))
            self._big_m.add(float(big_m))
            beta = self._beta(float(m))
        else:
            beta = 1.0  # Eq. 5 over a history of one point: t * softmax of one value = 1
        rows = [p % self.window for p in range(options.intra_start(points, self.window), points + 1)]
        return combine(alpha, self._abs_alphas[rows].sum(axis=0), len(rows), beta, options)

    def _beta(self, m_now: float) -> float:
        """Eq. 5: min(t * exp(z(t)) / sum_k exp(z(k)), 1) with z(k) = scale * m(k), over the t values kept."""
        total, t = self._big_m.value, len(self._m)
        if total == 0:
            return 1.0
        log_denominator = self._m.log_sum(-self.temperature * t / total, m_now)
        return min(math.exp(math.log(t) - log_denominator), 1.0)
