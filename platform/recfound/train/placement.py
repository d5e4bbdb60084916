"""Bounded waits for the training workers' resources.

Ray Train V2 waits `RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S` (60 s) for the worker group's placement
group and then, by default, retries without end: a job asking for more than the cluster can give
waits forever. On a cluster without an autoscaler nothing will ever add resources, so the job fails
at once when the request exceeds the cluster's total, and after `train.placement_timeout_s` (default
120 s) when the resources exist but stay taken. With an autoscaler the wait is unbounded unless the
option sets one (nodes may take many minutes to come up). Either way, while the workers' placement
group waits (at the start, or after a lost node), the driver says what it waits for (after 5 s, then
every 30 s).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from recfound.cluster import has_autoscaler
from recfound.train.errors import TrainingError

DEFAULT_PLACEMENT_TIMEOUT_S = 120.0
FIRST_REPORT_S, REPORT_EVERY_S = 5.0, 30.0  # when a job still waiting for its workers says so
POLL_S = 1.0
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"  # propagated by Ray Train to its controller
# Ray Train counts a worker group that failed to start (a worker died while starting, a node went away)
# like one that timed out: both are retried up to the controller failure limit, so the bounded wait is
# split over a few attempts instead of failing at the first start-up error.
START_ATTEMPTS = 3


def worker_resources(train: Any) -> dict[str, float]:
    """What one training worker reserves."""
    return {"CPU": float(train.cpus_per_worker), **({"GPU": 1.0} if train.use_gpu else {}),
            **({train.worker_resource: 1.0} if train.worker_resource else {})}


def placement_timeout(train: Any, autoscaled: bool) -> float | None:
    """The bound on the wait for the workers' resources; None: wait as long as it takes."""
    if train.placement_timeout_s is not None:
        return float(train.placement_timeout_s)
    return None if autoscaled else DEFAULT_PLACEMENT_TIMEOUT_S


def _describe(resources: Mapping[str, float], keys: list[str]) -> str:
    return "{" + ", ".join(f"{key}: {resources.get(key, 0.0):g}" for key in keys) + "}"


def _request_text(train: Any) -> tuple[str, dict[str, float], list[str]]:
    """What the job asks for in words, and in numbers: an elastic job's least (`train.num_workers`'s min)."""
    per_worker = worker_resources(train)
    total = {key: amount * train.min_workers for key, amount in per_worker.items()}
    keys = list(per_worker)
    workers = f"at least {train.min_workers}" if train.elastic else str(train.min_workers)
    return f"{workers} worker(s) x {_describe(per_worker, keys)} = {_describe(total, keys)}", total, keys


def check_feasible(train: Any) -> None:
    """Fail now when a cluster without an autoscaler can never hold the workers."""
    import ray

    if has_autoscaler():
        return  # it may add nodes (Ray Train checks against autoscaler v2's maximum itself)
    asked, total, keys = _request_text(train)
    have = ray.cluster_resources()
    if any(total[key] > have.get(key, 0.0) + 1e-9 for key in keys):
        raise TrainingError(f"the job asks for {asked}, but the cluster has {_describe(have, keys)} in all and no "
                            "autoscaler: lower train.num_workers or train.cpus_per_worker, or use a larger cluster")


def placement_error(train: Any, timeout_s: float) -> TrainingError:
    """The one-line error of a job whose workers could not be placed within `timeout_s`."""
    import ray

    asked, _, keys = _request_text(train)
    return TrainingError(
        f"the workers could not be placed within {timeout_s:g} s: the job asks for {asked}; the cluster has "
        f"{_describe(ray.cluster_resources(), keys)} in all, {_describe(ray.available_resources(), keys)} free now "
        "(the rest is held by other jobs or actors); free them, lower train.num_workers or train.cpus_per_worker, "
        "or raise train.placement_timeout_s")


def is_placement_timeout(error: BaseException) -> bool:
    """Whether Ray Train gave up waiting for the worker group's placement group."""
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError  # Ray 2.60 (pinned)

    return isinstance(getattr(error, "controller_failure", None), WorkerGroupStartupTimeoutError)


@contextmanager
def start_timeout(timeout_s: float | None) -> Iterator[int]:
    """Within the block, Ray Train controllers started here wait about `timeout_s` in all for their
    workers' placement group (`START_ATTEMPTS` attempts of an equal share); yields the controller failure
    limit that makes the last attempt final, or -1 (no limit) when `timeout_s` is None."""
    if timeout_s is None:
        yield -1
        return
    previous = os.environ.get(START_TIMEOUT_ENV)
    os.environ[START_TIMEOUT_ENV] = str(timeout_s / START_ATTEMPTS)
    try:
        yield START_ATTEMPTS - 1
    finally:
        if previous is None:
            os.environ.pop(START_TIMEOUT_ENV, None)
        else:
            os.environ[START_TIMEOUT_ENV] = previous


def waiting_line(train: Any, waited_s: float, timeout_s: float | None) -> str:
    """What a job that is still waiting for its workers prints."""
    import ray

    asked, _, keys = _request_text(train)
    until = ("an autoscaler is expected to add nodes; no limit (train.placement_timeout_s sets one)"
             if timeout_s is None else f"the job fails after {timeout_s:g} s")
    return (f"waiting {waited_s:.0f} s for the workers' resources: the job asks for {asked}; "
            f"{_describe(ray.available_resources(), keys)} free now; {until}")


def request_pending(train: Any) -> bool:
    """Whether a placement group of this job's worker shape waits for resources (Ray Train asks for its
    worker group as one placement group of one bundle per worker)."""
    from ray.util.placement_group import placement_group_table

    shape = worker_resources(train)
    return any(group["state"] in ("PENDING", "RESCHEDULING") and group["bundles"]
               and all(bundle == shape for bundle in group["bundles"].values())
               for group in placement_group_table().values())


@contextmanager
def waiting_reported(train: Any, timeout_s: float | None) -> Iterator[None]:
    """Within the block, whenever the workers' placement group has waited `FIRST_REPORT_S`, print
    `waiting_line`, then every `REPORT_EVERY_S` while it still waits (at the start, and again when the
    workers are placed anew after a lost node). A thread of the driver polls the placement groups."""
    done = threading.Event()

    def watch() -> None:
        since = next_report = None
        while not done.wait(POLL_S):
            try:
                pending = request_pending(train)
                now = time.monotonic()
                if not pending:
                    since = None
                elif since is None:
                    since, next_report = now, now + FIRST_REPORT_S
                elif now >= next_report:
                    print(waiting_line(train, now - since, timeout_s), flush=True)
                    next_report = now + REPORT_EVERY_S
            except Exception:  # noqa: BLE001 - the cluster going away: the run is ending
                return

    thread = threading.Thread(target=watch, name="recfound-placement-wait", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=10)
