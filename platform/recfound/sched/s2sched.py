"""S2Sched (Eqs. 3-6 of the RecFound paper) as pure functions of a validation-loss history.

numpy only: no Ray, no torch. `history[s - 1, i]` is task i's validation loss at point s = 1..T
(one task kind). Everything is computed from scratch on every call; `incremental.py` gives the
same numbers one point at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Options:
    """The departures of the authors' public code from the paper; the defaults are the paper."""

    logit_scale: bool = False  # multiply Eq. 6's logits by K
    min_ratio: float = 0.0  # floor per task: w <- min_ratio + (1 - K * min_ratio) * w when any w < min_ratio
    size_prior: tuple[float, ...] | None = None  # task pool sizes: w <- w * size / mean(size), renormalized
    max_loss_slope: bool = False  # m(k) = slope of max_i l~_i instead of max_i alpha_i(k)
    first_point_baseline: bool = False  # point 1 only normalizes: the slopes are fit to points 2..T
    slope_history_start: int = 2  # the first point whose slopes enter the histories of Eqs. 4 and 5
    intra_step_index: bool = False  # Eq. 4's window: the slope history from entry max(0, T - L) on

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_ratio) or self.min_ratio < 0:
            raise ValueError(f"min_ratio must be a finite number >= 0, got {self.min_ratio!r}")
        start = self.slope_history_start
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 2:
            raise ValueError(f"slope_history_start must be an integer >= 2 (a point with a slope), got {start!r}")
        if self.size_prior is not None:
            sizes = np.asarray(self.size_prior, dtype=np.float64)
            if sizes.ndim != 1 or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
                raise ValueError(f"size_prior must be a list of positive pool sizes, got {self.size_prior!r}")

    def check_tasks(self, num_tasks: int) -> None:
        """Raise if the options do not fit `num_tasks` tasks."""
        if self.min_ratio * num_tasks > 1:
            raise ValueError(f"min_ratio={self.min_ratio} is above 1/K for K={num_tasks} tasks")
        if self.size_prior is not None and len(self.size_prior) != num_tasks:
            raise ValueError(f"size_prior has {len(self.size_prior)} pool sizes for {num_tasks} tasks")

    def history_start(self, points: int) -> int:
        """The first point of the slope histories of Eqs. 4 and 5 when there are `points` >= 2 points
        (before slope_history_start is reached the history holds the current point only)."""
        return min(points, self.slope_history_start)

    def intra_start(self, points: int, window: int) -> int:
        """The first point of Eq. 4's window of slopes when there are `points` >= 2 points."""
        start = self.history_start(points)
        if self.intra_step_index:  # never empty: at least the current slope (the authors' slice can be)
            return min(points, start + max(0, points - window))
        return max(start, points - window + 1)


@dataclass(frozen=True)
class Terms:
    """The ratios and the terms they came from; the terms are None before the first slope (< 2 points)."""

    ratios: np.ndarray
    alpha: np.ndarray | None = None  # alpha_i(t), the current slopes
    inter: np.ndarray | None = None  # gamma_inter (Eq. 3)
    intra: np.ndarray | None = None  # gamma_intra (Eq. 4)
    beta: float | None = None  # Eq. 5


def make_options(**options: Any) -> Options:
    """Options from keyword arguments, with a clear error for an unknown name."""
    known = Options.__dataclass_fields__
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"unknown S2Sched option(s) {sorted(unknown)}; known: {', '.join(known)}")
    if options.get("size_prior") is not None:
        options["size_prior"] = tuple(float(size) for size in np.ravel(options["size_prior"]))
    return Options(**options)


def check_params(window: int, temperature: float) -> None:
    """Raise ValueError for a window below 2 or a non-positive temperature."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 2:
        raise ValueError(f"window must be an integer >= 2, got {window!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def check_losses(losses: Any, name: str, ndim: int) -> np.ndarray:
    """`losses` as float64 with `ndim` dimensions, at least one task, every value finite and > 0."""
    try:
        array = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a numeric array: {error}") from None
    if array.ndim != ndim or 0 in array.shape:
        shape = "[points >= 1, tasks >= 1]" if ndim == 2 else "[tasks >= 1]"
        raise ValueError(f"{name} must have shape {shape}, got shape {array.shape}")
    bad = np.argwhere(~np.isfinite(array) | (array <= 0))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name} must be finite and > 0; found {float(array[where])} at index {where}")
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D array."""
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def equal_ratios(num_tasks: int) -> np.ndarray:
    return np.full(num_tasks, 1.0 / num_tasks)


def window_slope(window: np.ndarray) -> np.ndarray:
    """Least-squares slope against the point index of each column of `window` [n, columns] (0 if n < 2).

    The sum is exact (math.fsum over x_j * y_j with integer x_j): the same bits however the window
    was stored, and exactly 0 for a constant or mirror-symmetric window, where a rounded sum would
    leave ~1e-17 that Eqs. 3-4 (invariant to the scale of the slopes) would blow up to O(1).
    """
    n = len(window)
    if n < 2:
        return np.zeros(window.shape[1])  # no slope from one point (the authors' fit returns 0 too)
    x = np.arange(-(n - 1), n, 2, dtype=np.float64)  # 2 * (j - mean of j)
    products = (window * x[:, None]).T.tolist()
    return np.array([math.fsum(column) for column in products]) / (n * (n * n - 1) / 6)  # sum x^2 / 2


def window_slopes(series: np.ndarray, window: int, skip: int = 0) -> np.ndarray:
    """Slopes of each column over points max(1 + skip, s-L+1)..s, for s = 2..T: shape [T-1, columns]."""
    return np.array([window_slope(series[max(skip, s - window): s]) for s in range(2, len(series) + 1)])


def beta_weight(m: np.ndarray, big_m: np.ndarray, temperature: float) -> float:
    """Eq. 5 from the slope history m(1..t) and the terms of its denominator (max_i |alpha_i(k)|, or |m(k)|
    with max_loss_slope)."""
    t, total = len(m), math.fsum(big_m)
    z = np.zeros(t) if total == 0 else (-temperature * t / total) * m
    return min(float(t * softmax(z)[-1]), 1.0)


def combine(alpha: np.ndarray, intra_den: np.ndarray, intra_len: int, beta: float, options: Options) -> Terms:
    """Eqs. 3, 4 and 6 (then the authors' options) from the current slopes and the beta weight.

    intra_den[i] is sum |alpha_i(s)| over the last `intra_len` points with a slope.
    """
    k = len(alpha)
    inter_den = np.abs(alpha).sum()
    inter = -softmax(k * alpha / inter_den if inter_den > 0 else np.zeros(k))
    safe_den = np.where(intra_den > 0, intra_den, 1.0)
    intra = softmax(np.where(intra_den > 0, -intra_len * alpha / safe_den, 0.0))
    logits = -beta * inter + (1 - beta) * intra
    ratios = softmax(k * logits if options.logit_scale else logits)
    if options.size_prior is not None:
        sizes = np.asarray(options.size_prior, dtype=np.float64)
        ratios = ratios * (sizes / sizes.mean())
        ratios = ratios / ratios.sum()
    if options.min_ratio > 0 and np.any(ratios < options.min_ratio):
        ratios = options.min_ratio + (1 - k * options.min_ratio) * ratios
    return Terms(ratios, alpha, inter, intra, beta)


def s2sched_terms(history: Any, window: int, temperature: float, **options: Any) -> Terms:
    """The S2Sched ratios for the next step and the terms behind them (see `s2sched_ratios`)."""
    check_params(window, temperature)
    losses = check_losses(history, "history", ndim=2)
    opts = make_options(**options)
    opts.check_tasks(losses.shape[1])
    if len(losses) < 2:
        return Terms(equal_ratios(losses.shape[1]))
    points = len(losses)
    normalized = losses / losses[0]
    slopes = window_slopes(np.column_stack([normalized, normalized.max(axis=1)]), window,
                           skip=int(opts.first_point_baseline))  # row p - 2: the slopes of point p = 2..T
    alphas, max_loss = slopes[:, :-1], slopes[:, -1]
    m, big_m = (max_loss, np.abs(max_loss)) if opts.max_loss_slope else (alphas.max(axis=1), np.abs(alphas).max(axis=1))
    kept = slice(opts.history_start(points) - 2, None)
    recent = np.abs(alphas[opts.intra_start(points, window) - 2:])
    return combine(alphas[-1], recent.sum(axis=0), len(recent), beta_weight(m[kept], big_m[kept], temperature), opts)


def s2sched_ratios(history: Any, window: int, temperature: float, **options: Any) -> np.ndarray:
    """K sample ratios (summing to 1) for the next step from a [points, K] validation-loss history.

    window is L, temperature is tau; options are the fields of `Options` (all off by default).
    With fewer than 2 points there is no slope yet and the ratios are equal.
    """
    return s2sched_terms(history, window, temperature, **options).ratios


def allocate(batch_size: int, ratios: Sequence[float] | np.ndarray) -> np.ndarray:
    """Integer counts summing to exactly batch_size: floor(B * w_i), then +1 to the largest
    fractional parts (ties to the lower task index)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 0:
        raise ValueError(f"batch_size must be an integer >= 0, got {batch_size!r}")
    w = np.asarray(ratios, dtype=np.float64)
    if w.ndim != 1 or len(w) < 1 or not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1) > 1e-9:
        raise ValueError(f"ratios must be a non-empty 1-D list of finite values >= 0 summing to 1, got {ratios!r}")
    exact = batch_size * (w / w.sum())
    counts = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(w)), -(exact - counts)))  # largest fraction first, then lower index
    counts[order[: batch_size - counts.sum()]] += 1
    return counts
