"""The scheduler as one named Ray actor per run, and the small client the training workers use.

The actor is async: `counts(step)` waits (on an asyncio condition, no polling) until the point that
step needs is complete, and fails with a TimeoutError that names the missing ranks otherwise. It
asks for no CPU (num_cpus=0), so it never competes with the training workers for a slot.

When its process dies, Ray starts it again (`max_restarts=-1`) from its spec, empty: the workers'
calls that were in flight fail, and so does every `report` or `counts` until it is restored (it knows
it was restarted), and so do `state` (a checkpoint must not save the empty state) and `history`; Ray
Train restarts the worker group from the latest checkpoint, and rank 0 restores the actor to that
checkpoint's state (`restore`), as after the loss of a worker.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, Mapping

import ray

from recfound.sched.scheduler import Scheduler, ScheduleSpec

DEFAULT_TIMEOUT_S = 600.0


def actor_name(run_name: str) -> str:
    """The Ray actor name of a run's scheduler."""
    return f"recfound-s2sched-{run_name}"


@ray.remote(num_cpus=0, max_restarts=-1)
class SchedulerActor:
    """Holds a run's `Scheduler`; every method is a thin wrapper around it (see scheduler.py)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._scheduler = Scheduler(ScheduleSpec.from_dict(spec))
        self._changed: asyncio.Condition | None = None
        with warnings.catch_warnings():  # Ray 2.60's property calls its own deprecated `actor_id`
            warnings.simplefilter("ignore")
            self._lost_state = ray.get_runtime_context().was_current_actor_reconstructed

    def _check_state(self) -> None:
        if self._lost_state:
            raise RuntimeError("S2Sched: the scheduler actor's process was restarted and lost its state; the "
                               "workers restart from the latest checkpoint, whose state rank 0 restores")

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created here so that it belongs to the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        async with self._condition():
            self._condition().notify_all()

    async def report(self, step: int, rank: int, loss_sums: Mapping[str, float],
                     counts: Mapping[str, int]) -> dict[str, Any]:
        self._check_state()
        result = self._scheduler.report(step, rank, loss_sums, counts)
        if result["complete"]:
            await self._notify()
        return result

    async def counts(self, step: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        self._check_state()
        self._scheduler.ready(step)  # a bad step fails now, not after the timeout
        condition = self._condition()
        async with condition:
            try:
                await asyncio.wait_for(condition.wait_for(lambda: self._scheduler.ready(step)), timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"S2Sched: no counts after {timeout_s} s: "
                                   f"{self._scheduler.waiting_for(step)}") from None
        return self._scheduler.counts(step)

    async def history(self) -> dict[str, Any]:
        self._check_state()
        return self._scheduler.history()

    async def state(self) -> dict[str, Any]:
        self._check_state()
        return self._scheduler.state()

    async def restore(self, state: Mapping[str, Any], world_size: int | None = None) -> None:
        restored = Scheduler.from_state(state, world_size)
        old, new = self._scheduler.spec.to_dict(), restored.spec.to_dict()
        differing = sorted(key for key in old if old[key] != new[key] and key != "world_size")
        if differing:
            raise ValueError(f"the saved scheduler state was made with different settings: {differing}")
        self._scheduler = restored
        self._lost_state = False
        await self._notify()


class SchedulerClient:
    """What a worker (or the driver) calls; picklable, so it can be handed to Ray Train workers."""

    def __init__(self, handle: ray.actor.ActorHandle) -> None:
        self.handle = handle

    @classmethod
    def connect(cls, run_name: str, namespace: str | None = None) -> SchedulerClient:
        """The client of a run's scheduler that `start_scheduler` started (in this Ray namespace)."""
        return cls(ray.get_actor(actor_name(run_name), namespace=namespace))

    def report(self, step: int, rank: int, loss_sums: Mapping[str, float], counts: Mapping[str, int]) -> dict[str, Any]:
        """Report this rank's share of point `step`: per task the sum of its validation losses and their number."""
        return ray.get(self.handle.report.remote(step, rank, dict(loss_sums), dict(counts)))

    def counts(self, step: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """The counts (and ratios) per kind and task for training step `step`; waits up to timeout_s."""
        return ray.get(self.handle.counts.remote(step, timeout_s))

    def history(self) -> dict[str, Any]:
        return ray.get(self.handle.history.remote())

    def state(self) -> dict[str, Any]:
        """The state to save with a checkpoint (a JSON-able dict)."""
        return ray.get(self.handle.state.remote())

    def restore(self, state: Mapping[str, Any], world_size: int | None = None) -> None:
        """Continue from `state`; `world_size`: the ranks that report from now on (see `Scheduler.from_state`)."""
        ray.get(self.handle.restore.remote(dict(state), world_size))


def start_scheduler(run_name: str, spec: ScheduleSpec, *, state: Mapping[str, Any] | None = None,
                    detached: bool = False, namespace: str | None = None,
                    scheduling_strategy: Any = None) -> SchedulerClient:
    """Start a run's scheduler actor (named after the run), restored from `state` if given.

    detached=True keeps it alive after the driver exits (stop it with ray.kill); the name must be
    free in the namespace. `scheduling_strategy` places it (the training driver pins it to its own node).
    """
    handle = SchedulerActor.options(name=actor_name(run_name), namespace=namespace,
                                    lifetime="detached" if detached else None,
                                    scheduling_strategy=scheduling_strategy).remote(spec.to_dict())
    client = SchedulerClient(handle)
    if state is not None:
        try:
            client.restore(state)
        except Exception:
            ray.kill(handle)  # a named actor that could not be restored must not linger under the run's name
            raise
    return client
