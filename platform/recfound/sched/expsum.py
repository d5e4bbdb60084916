"""log sum_k exp(c * (v_k - r)) over a growing list of values, for a scale c that changes at every call.

Eq. 5 needs the softmax denominator sum_k exp(c_t * m(k)) with c_t = -tau * t / S_t: a new scale
at every point, so no running sum of exponentials can be carried over, and summing directly costs
O(t). Instead the values are grouped into buckets of width h with |c| * h / 2 <= 1; a bucket with
centre mu keeps the power sums Q_n = sum (v - mu)^n for n <= ORDER, and then
    sum_{v in bucket} exp(c * v) = exp(c * mu) * sum_n c^n * Q_n / n!
with a truncation error below 1/(ORDER+1)! relative (< 1e-17). One call costs O(buckets * ORDER):
set by the spread of the values in units of 1/|c|, not by how many there are. The buckets are
rebuilt from the stored values (O(count)) when |c| has drifted by more than a factor of 2 since the
last build; c_t moves by about 1/t per point, so this is rare. Few values, or values so spread out that
the buckets outnumber count / ORDER, are summed directly (exact as well).
"""

from __future__ import annotations

import math

import numpy as np

ORDER = 18
DIRECT_MAX = 2048  # up to this many values a direct sum is cheaper than the buckets
_POWERS = np.arange(ORDER + 1)
_INV_FACTORIALS = np.array([1 / math.factorial(n) for n in range(ORDER + 1)])


def _log_sum_exp(logs: np.ndarray) -> float:
    top = logs.max()
    return float(top + np.log(np.exp(logs - top).sum()))


class ExpSum:
    """A growing list of finite values answering log sum_k exp(scale * (v_k - ref)) (see module doc)."""

    def __init__(self) -> None:
        self._values = np.empty(64)
        self._count = 0
        self._max_abs = 0.0
        self._width: float | None = None  # bucket width; None until the first bucketed call
        self._rows: dict[int, int] = {}  # bucket key floor(v / width) -> row of the arrays below
        self._centres = np.empty(0)
        self._power_sums = np.empty((0, ORDER + 1))

    def __len__(self) -> int:
        return self._count

    def append(self, value: float) -> None:
        """Add one value (kept, and added to its bucket if buckets are in use)."""
        if self._count == len(self._values):
            self._values = np.concatenate([self._values, np.empty(len(self._values))])
        self._values[self._count] = value
        self._count += 1
        self._max_abs = max(self._max_abs, abs(value))
        if self._width is not None:
            self._add_to_bucket(value)

    def log_sum(self, scale: float, ref: float) -> float:
        """log sum_k exp(scale * (v_k - ref)) over every value added so far (at least one)."""
        if self._count == 0:
            raise ValueError("ExpSum is empty")
        if scale == 0:
            return math.log(self._count)
        if self._count <= DIRECT_MAX or self._max_abs * abs(scale) >= 2.0**50:  # 2**50: bucket keys stay exact
            return self._direct(scale, ref)
        self._fit(abs(scale))
        rows = len(self._rows)
        if rows * (ORDER + 1) > self._count:
            return self._direct(scale, ref)
        per_bucket = self._power_sums[:rows] @ (scale ** _POWERS * _INV_FACTORIALS)
        return _log_sum_exp(scale * (self._centres[:rows] - ref) + np.log(per_bucket))

    def _direct(self, scale: float, ref: float) -> float:
        return _log_sum_exp(scale * (self._values[: self._count] - ref))

    def _fit(self, scale: float) -> None:
        """Rebuild the buckets unless |scale| * width / 2 lies in [1/4, 1]."""
        if self._width is None or not 0.5 <= scale * self._width <= 2.0:
            self._rebuild(1.0 / scale)

    def _rebuild(self, width: float) -> None:
        values = self._values[: self._count]
        keys, rows = np.unique(np.floor(values / width).astype(np.int64), return_inverse=True)
        self._width = width
        self._rows = {int(key): row for row, key in enumerate(keys)}
        self._centres = np.empty(2 * len(keys))
        self._centres[: len(keys)] = (keys + 0.5) * width
        self._power_sums = np.zeros((2 * len(keys), ORDER + 1))
        offsets, term = values - self._centres[rows], np.ones(len(values))
        for n in range(ORDER + 1):
            self._power_sums[: len(keys), n] = np.bincount(rows, weights=term, minlength=len(keys))
            term = term * offsets

    def _add_to_bucket(self, value: float) -> None:
        key = math.floor(value / self._width)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = len(self._rows)
            if row == len(self._centres):
                self._centres = np.concatenate([self._centres, np.empty(len(self._centres))])
                self._power_sums = np.vstack([self._power_sums, np.zeros_like(self._power_sums)])
            self._centres[row] = (key + 0.5) * self._width
        self._power_sums[row] += (value - self._centres[row]) ** _POWERS
