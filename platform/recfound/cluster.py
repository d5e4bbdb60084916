"""Connecting to Ray: the cluster a job was submitted to, else a private local one."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def ray_session(num_cpus: int | None = None, log_to_driver: bool = False,
                dashboard: bool = False) -> Iterator[None]:
    """Ray for the duration of a block.

    Reuses Ray if this process already initialised it; attaches to the cluster in `RAY_ADDRESS`
    (set by `ray job submit`); otherwise starts a private local cluster, because a bare
    `ray.init()` would attach to any cluster already running on the machine. `log_to_driver` shows
    the workers' output (e.g. the training progress of rank 0) in this process. `dashboard` starts the
    private cluster with its dashboard (the State API that Ray Train's placement-group cleaner queries).
    """
    # Ray Data logs every dataset's plan and progress at INFO; our own progress lines suffice.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    import ray

    if ray.is_initialized():
        yield
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # A private cluster on loopback: no token authentication unless the user asks for it.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=dashboard,
                 log_to_driver=log_to_driver)
    try:
        yield
    finally:
        ray.shutdown()
