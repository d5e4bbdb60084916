"""The S2Sched presets: `paper` (Eqs. 3-6 as printed) and `authors` (what the authors' public code computes).

`authors_options` gives the `s2sched_terms` options that reproduce the authors' `CoBaStatus` scheduler
(training/utils/loss_utils.py of github JunkFood436/RecFound), with one of our points standing for one
of their steps (their update interval is 1) and the first point standing for the evaluation they run
before training to normalize the losses. numpy only.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

PRESETS = ("paper", "authors")
# The option fields a run config may set one by one on top of `paper`; `authors` sets them all.
CONFIG_OPTIONS = {"logit_scale": False, "min_ratio": 0.0, "size_prior": False, "max_loss_slope": False}


def authors_options(num_tasks: int, pool_sizes: Sequence[float], warmup_points: int) -> dict[str, Any]:
    """Options for `s2sched_terms(history, window, temperature, **options)` that make it compute the
    authors' ratios and divergence factor (beta) for one task kind of `num_tasks` tasks.

    pool_sizes: the tasks' training pool sizes (their size prior). warmup_points: how many points the first
    scheduled step sees; the slope histories of Eqs. 4 and 5 start at that point (point 2 at the earliest),
    and before it they hold the current point only. Their launch script uses window 64, temperature 1 and
    32 warm-up steps.
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an integer >= 1, got {num_tasks!r}")
    if pool_sizes is None or len(pool_sizes) != num_tasks:
        raise ValueError(f"pool_sizes must give one pool size per task ({num_tasks}), got {pool_sizes!r}")
    if isinstance(warmup_points, bool) or not isinstance(warmup_points, (int, np.integer)) or warmup_points < 0:
        raise ValueError(f"warmup_points must be an integer >= 0, got {warmup_points!r}")
    return {
        "logit_scale": True,  # their final softmax takes weight_logits * group_size
        "min_ratio": 1 / (num_tasks * 5),  # adjust_weights
        "size_prior": tuple(float(size) for size in pool_sizes),  # TASK_NUMS / mean, renormalized
        "max_loss_slope": True,  # the divergence factor from the slope of the per-point maximum loss
        "first_point_baseline": True,  # valid_task_loss_begining: a normalizer outside the history
        "slope_history_start": max(2, int(warmup_points)),  # their slope lists begin at the warm-up step
        "intra_step_index": True,  # per_task_slope_list[:, start_step:] with start_step = step - L
    }


def preset_conflict(preset: str, options: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, reason) for the first of the config's option fields that `preset` does not allow, or None:
    `paper` takes them one by one, `authors` sets them all itself, so there they must keep their defaults."""
    if preset not in PRESETS:
        return "preset", f"must be one of {', '.join(PRESETS)} (got {preset!r})"
    if preset == "paper":
        return None
    for name, default in CONFIG_OPTIONS.items():
        if options.get(name, default) != default:
            return name, (f"cannot be set with preset authors, which sets every option as the authors' code does "
                          f"(got {options[name]!r}); remove it, or use preset paper to choose the options one by one")
    return None
