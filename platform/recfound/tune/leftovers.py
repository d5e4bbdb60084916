"""What a trial that Tune kills leaves in the cluster, and how the sweep driver releases it.

When ASHA stops a trial, Tune kills the trial's actor mid-run. Its `TrialDriver`, the Train controller
the driver started and the workers die with it (Ray kills an actor's children), but two things outlive
them:

- the workers' placement group: it belongs to the job, not to the controller that created it;
- Ray Train's detached `PlacementGroupCleaner`, which should remove that group but needs the State API
  (a dashboard) to notice its controller died; without one it lives on, warning once a second.

`TrialResources`, a Ray Train callback of the trial's controller, registers the controller with the
sweep's `TrialJanitor` as soon as the controller starts, before any worker group exists. When the trial
ends, the sweep driver's `ReleaseStoppedTrials` (a Tune callback) kills the trial's driver, and the
janitor waits for the trial's controllers to die, then removes every placement group they created
(found by creator in the GCS table, so a group created an instant before the kill is found too) and
stops their cleaners. Whatever that misses (a group the GCS lists only after the janitor looked; the
suite caught one left by a dead controller about once in ten sweeps, its cause unconfirmed) is an
orphan: a group of the sweep's job whose creating actor is dead. Ray removes those only when the job
ends, and none of ours is used by anyone but its creator (a Train controller's worker group). The
janitor removes the job's orphans at every trial's end, about every `ORPHAN_CHECK_S` while the sweep
runs (so that one cannot keep a pending trial waiting long) and when the sweep ends, where it also
releases the trials Tune stopped without telling its callbacks' `on_trial_complete`. This reads
internals of Ray 2.60's Train V2 and GCS tables (pinned in requirements.txt): the controller's callbacks
and Ray's cleaner handle, and the creator of each placement group.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune
from ray.train.v2._internal.execution.callback import ControllerCallback  # Ray 2.60 (pinned)

from recfound.tune.spec import SweepSpec
from recfound.tune.trial import trial_run_name

# How long the janitor waits at most for a killed trial's controllers to be dead (it goes on as soon as they
# are). A controller still alive when the janitor looks can create its worker group's placement group after,
# which only a later orphan check removes. With 10 s here the test suite found a dead controller's group left
# twice in about ten runs (busy machine); with 60 s once more (2026-12-04), hence the orphan checks.
DEAD_WAIT_S = 60.0
ORPHAN_CHECK_S = 10.0  # how often the sweep driver has the janitor look for orphaned groups while trials run
JANITOR_CALL_S = DEAD_WAIT_S + 30.0  # the longest the sweep driver waits for one janitor call


def driver_name(run_name: str) -> str:
    """The Ray actor name of a trial's driver."""
    return f"recfound-trial-{run_name}"


def janitor_name(sweep: str) -> str:
    """The Ray actor name of a sweep driver's janitor."""
    return f"recfound-sweep-janitor-{sweep}"


class TrialResources(ControllerCallback):
    """A Ray Train controller callback: registers the controller, and Ray Train's placement-group cleaner
    that the controller started just before, with the sweep's janitor under the trial's run name."""

    def __init__(self, janitor: str, run_name: str) -> None:
        self.janitor, self.run_name = janitor, run_name

    def after_controller_start(self, train_run_context: Any) -> None:
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        worker = ray._private.worker.global_worker
        controller_id = worker.core_worker.get_actor_id()
        # Ray's own callbacks run before the user's: the cleaner exists by now.
        cleaners = [callback._cleaner for callback in worker.actors[controller_id]._callbacks
                    if isinstance(callback, PlacementGroupCleanerCallback) and callback._cleaner is not None]
        ray.get(ray.get_actor(self.janitor).register.remote(self.run_name, controller_id.hex(), cleaners))


@ray.remote(num_cpus=0)
class TrialJanitor:
    """Each trial's Train controllers and their cleaner actors, by trial run name. One per sweep driver
    (named `janitor_name(sweep)`), its child."""

    def __init__(self) -> None:
        self._held: dict[str, list[tuple[str, list[Any]]]] = {}
        self._job_id = ray.get_runtime_context().get_job_id()  # the sweep driver's job, whose trials these are

    def register(self, run_name: str, controller_id: str, cleaners: list[Any]) -> None:
        self._held.setdefault(run_name, []).append((controller_id, cleaners))

    def release(self, run_name: str, dead_wait_s: float = DEAD_WAIT_S) -> int:
        """Once the trial's controllers are dead, remove the placement groups they created that still
        exist and stop their cleaners, then the job's orphans; how many groups were removed."""
        return self._release(self._held.pop(run_name, []), dead_wait_s)

    def finish(self, dead_wait_s: float = DEAD_WAIT_S) -> int:
        """At the sweep's end: `release` every trial still held (Tune stops the trials still running at the
        end without calling `on_trial_complete`); how many groups were removed."""
        held = [entry for entries in self._held.values() for entry in entries]
        self._held.clear()
        return self._release(held, dead_wait_s)

    def remove_orphans(self) -> int:
        """Remove the job's orphaned placement groups (`orphaned_groups`); how many."""
        return _remove_groups(orphaned_groups(self._job_id, live_group_records()))

    def _release(self, held: list[tuple[str, list[Any]]], dead_wait_s: float) -> int:
        controllers = {controller_id for controller_id, _ in held}
        _wait_dead(controllers, dead_wait_s)
        for _, cleaners in held:
            for cleaner in cleaners:
                ray.kill(cleaner)  # a finished trial's cleaner has exited already: nothing happens
        groups = live_group_records()  # read once, after the wait
        return _remove_groups(sorted(set(groups_created_by(controllers, groups))
                                     | set(orphaned_groups(self._job_id, groups))))


def _remove_groups(group_ids: list[str]) -> int:
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    for group_id in group_ids:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
    return len(group_ids)


def placement_group_records() -> list[Any]:
    """Every placement group of the cluster as the GCS holds it (`PlacementGroupTableData`: its creator
    actor and job among the fields, which Ray's public table leaves out)."""
    from ray._private.state import state  # Ray 2.60 (pinned)
    from ray.core.generated import gcs_pb2

    return [gcs_pb2.PlacementGroupTableData.FromString(raw)
            for raw in state._connect_and_get_accessor().get_placement_group_table()]


def live_group_records() -> list[Any]:
    """`placement_group_records` of the groups not yet removed."""
    from ray.core.generated import gcs_pb2

    return [group for group in placement_group_records() if group.state != gcs_pb2.PlacementGroupTableData.REMOVED]


def groups_created_by(actor_ids: set[str], groups: list[Any]) -> list[str]:
    """The ids of those of `groups` (GCS records) that one of these actors created."""
    return [group.placement_group_id.hex() for group in groups if group.creator_actor_id.hex() in actor_ids]


def orphaned_groups(job_id: str, groups: list[Any]) -> list[str]:
    """The ids of those of `groups` (GCS records, not removed) of job `job_id`, not detached, that an actor
    created and whose creator is dead (GCS tables): Ray removes those only when the job ends."""
    from ray._private.state import actors

    created_by_actors = [group for group in groups
                         if group.creator_job_id.hex() == job_id and not group.is_detached
                         and not ray.ActorID(group.creator_actor_id).is_nil()]  # not the driver's
    # The group's own flag is set when its creator dies, on the groups the GCS holds then: a group whose
    # creation reached the GCS after its creator died is known dead only from the actor table.
    return [group.placement_group_id.hex() for group in created_by_actors
            if group.creator_actor_dead
            or actors(actor_id=group.creator_actor_id.hex()).get("State", "DEAD") == "DEAD"]


def _wait_dead(actor_ids: set[str], wait_s: float) -> None:
    """Wait (at most `wait_s`) until the GCS has these actors dead: a controller outlives its killed
    owner by a moment, and must not create a group after the janitor looked."""
    from ray._private.state import actors

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if all(actors(actor_id=actor_id).get("State", "DEAD") == "DEAD" for actor_id in actor_ids):
            return
        time.sleep(0.2)


class ReleaseStoppedTrials(tune.Callback):
    """A Tune callback of the sweep driver: when a trial ends (finished, stopped by ASHA or failed), its
    driver actor is killed if still alive, and the janitor releases what the trial's controllers left."""

    # Class-level, so that a sweep saved by an older recfound (its callback pickled without them) restores.
    orphan_check_s: float = ORPHAN_CHECK_S
    _orphan_check: Any = None  # the janitor's remove_orphans call started by on_step_end
    _orphans_checked = 0.0  # when on_step_end started it (time.monotonic)

    def __init__(self, spec: SweepSpec, wait_s: float = 10.0, orphan_check_s: float = ORPHAN_CHECK_S) -> None:
        self.spec, self.wait_s, self.orphan_check_s = spec, wait_s, orphan_check_s
        self._janitor: Any = None

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment: no actor handles
        return {**self.__dict__, "_janitor": None, "_orphan_check": None}

    def setup(self, **info: Any) -> None:
        """Start the sweep's janitor (again, when a restored sweep starts a new driver)."""
        self._orphans_checked = 0.0  # a restored callback's clock reading is another process's
        self._janitor = TrialJanitor.options(name=janitor_name(self.spec.name), get_if_exists=True).remote()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.release(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Every `orphan_check_s`, have the janitor remove orphaned groups (without waiting for it; not
        while it is busy with the last check or a release)."""
        now = time.monotonic()
        if now - self._orphans_checked < self.orphan_check_s:
            return
        if self._orphan_check is not None:
            if not ray.wait([self._orphan_check], timeout=0)[0]:
                return
            _answer(self._orphan_check, "remove orphaned placement groups")  # done: says what went wrong
        self._orphan_check, self._orphans_checked = self._janitor.remove_orphans.remote(), now

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        _answer(self._janitor.finish.remote(), "release what the last trials left")

    def release(self, trial: Any) -> None:
        run_name = trial_run_name(self.spec, trial.trial_id)
        _kill_driver(driver_name(run_name), self.wait_s)
        _answer(self._janitor.release.remote(run_name), f"release what trial {run_name} left")


def _answer(call: Any, what: str) -> None:
    """Wait (at most JANITOR_CALL_S) for a janitor call; a janitor that failed or hangs is a warning, not
    the sweep's end: its trials trained all the same, only Ray resources may stay held until the job ends."""
    from ray.exceptions import RayError

    try:
        ray.get(call, timeout=JANITOR_CALL_S)
    except RayError as error:
        print(f"warning: the sweep's janitor could not {what} ({type(error).__name__}: {error}); Ray may keep "
              "those resources until the sweep's driver ends", flush=True)


def _kill_driver(name: str, wait_s: float) -> None:
    """Kill the named actor, if alive, and wait until it is gone (its children die with it)."""
    try:
        ray.kill(ray.get_actor(name))
    except ValueError:  # no such actor: the trial finished and its driver is gone
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name)
        except ValueError:
            return
        time.sleep(0.2)
