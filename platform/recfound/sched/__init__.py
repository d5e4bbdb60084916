"""S2Sched: the paper's sample scheduler (pure math, incremental form, presets, policy) and its Ray actor.

The math (`s2sched_ratios`, `allocate`, `IncrementalS2Sched`, the policy) needs numpy only; the
actor and the plot are imported on first use, so importing this package does not import Ray or
matplotlib.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from recfound.sched.incremental import IncrementalS2Sched
from recfound.sched.policy import MODES, KindSchedule, KindSpec, SchedConfig
from recfound.sched.presets import PRESETS, authors_options
from recfound.sched.s2sched import Options, Terms, allocate, s2sched_ratios, s2sched_terms
from recfound.sched.scheduler import NotReady, Scheduler, ScheduleSpec

_LAZY = {"SchedulerActor": "actor", "SchedulerClient": "actor", "start_scheduler": "actor", "actor_name": "actor",
         "plot_ratios": "plot"}

__all__ = ["MODES", "PRESETS", "IncrementalS2Sched", "KindSchedule", "KindSpec", "NotReady", "Options",
           "SchedConfig", "ScheduleSpec", "Scheduler", "Terms", "allocate", "authors_options", "s2sched_ratios",
           "s2sched_terms", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"recfound.sched.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'recfound.sched' has no attribute {name!r}")
