"""The sweep's janitor (recfound.tune.leftovers): once a trial's controller is killed, the placement groups
that controller created are removed, found by their creator in the GCS table, even one that nothing
registered (the group a controller creates an instant before Tune kills its trial). Groups that other
actors created are left alone. Any group of the job whose creating actor is dead (an orphan) is removed
when the janitor looks for orphans, registered or not; the driver's own groups and live actors' stay. The
sweep driver's Tune callback has the janitor look every few seconds and releases every trial still held
at the sweep's end."""

from __future__ import annotations

import pickle
import time

import ray
from ray._private.state import actors
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

from recfound.config import RunConfig
from recfound.tune.leftovers import ORPHAN_CHECK_S, ReleaseStoppedTrials, TrialJanitor, janitor_name
from recfound.tune.spec import SweepSpec


@ray.remote(num_cpus=0)
class GroupMaker:
    """Stands in for a Train controller: creates a placement group from inside an actor, as the
    controller's worker group does, and tells nobody."""

    def make_group(self) -> str:
        group = placement_group([{"CPU": 0.5}])
        ray.get(group.ready(), timeout=60)
        return group.id.hex()

    def actor_id(self) -> str:
        return ray.get_runtime_context().get_actor_id()


def _state(group_id: str) -> str:
    return placement_group_table(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))["state"]


def _remove(groups: list[str], handles: list) -> None:
    for group in groups:
        if _state(group) != "REMOVED":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group)))
    for handle in handles:
        ray.kill(handle)


def test_the_janitor_removes_what_a_killed_controller_created_and_nothing_else(ray_cluster):
    janitor = TrialJanitor.remote()
    killed, bystander = GroupMaker.remote(), GroupMaker.remote()
    killed_group = ray.get(killed.make_group.remote())
    bystander_group = ray.get(bystander.make_group.remote())
    ray.get(janitor.register.remote("sweep-trial-1", ray.get(killed.actor_id.remote()), []))
    ray.kill(killed)
    try:
        assert _state(killed_group) == "CREATED"  # a killed actor's group stays: it belongs to the job
        assert ray.get(janitor.release.remote("sweep-trial-1"), timeout=60) == 1
        assert _state(killed_group) == "REMOVED"
        assert _state(bystander_group) == "CREATED"
        assert ray.get(janitor.release.remote("sweep-trial-1"), timeout=60) == 0  # released once only
    finally:
        _remove([killed_group, bystander_group], [bystander, janitor])


def test_orphaned_groups_of_the_job_are_removed_registered_or_not(ray_cluster):
    janitor = TrialJanitor.remote()
    registered, unregistered, bystander = GroupMaker.remote(), GroupMaker.remote(), GroupMaker.remote()
    registered_group, unregistered_group, bystander_group = ray.get(
        [maker.make_group.remote() for maker in (registered, unregistered, bystander)])
    driver_group = placement_group([{"CPU": 0.1}])  # the driver's own: "creator actor dead" in the GCS, kept
    ray.get(driver_group.ready(), timeout=60)
    killed_ids = ray.get([registered.actor_id.remote(), unregistered.actor_id.remote()])
    ray.get(janitor.register.remote("sweep-trial-1", killed_ids[0], []))
    try:
        assert ray.get(janitor.remove_orphans.remote(), timeout=60) == 0  # every creator alive: nothing to do
        ray.kill(registered)
        ray.kill(unregistered)
        deadline = time.monotonic() + 60
        while any(actors(actor_id=actor_id).get("State") != "DEAD" for actor_id in killed_ids):
            assert time.monotonic() < deadline, "the killed actors are not dead in the GCS after 60 s"
            time.sleep(0.2)
        assert ray.get(janitor.finish.remote(), timeout=120) == 2
        assert _state(registered_group) == "REMOVED"
        assert _state(unregistered_group) == "REMOVED"
        assert _state(bystander_group) == "CREATED"
        assert _state(driver_group.id.hex()) == "CREATED"
        assert ray.get(janitor.finish.remote(), timeout=120) == 0
    finally:
        _remove([registered_group, unregistered_group, bystander_group, driver_group.id.hex()], [bystander, janitor])


def _dead(handle) -> bool:
    try:
        ray.get(handle.actor_id.remote(), timeout=60)
    except ray.exceptions.RayActorError:
        return True
    return False


def test_the_sweep_callback_removes_orphans_as_it_goes_and_releases_every_trial_at_the_end(ray_cluster):
    callback = ReleaseStoppedTrials(SweepSpec(name="janitor-test", source="test", base=None, base_config=RunConfig()),
                                    orphan_check_s=0.0)
    restored = pickle.loads(pickle.dumps(callback))  # as Tune saves it with the experiment: no actor handles
    assert restored._janitor is None and restored._orphan_check is None
    callback.setup()
    janitor = ray.get_actor(janitor_name("janitor-test"))
    orphaned, held, cleaner = GroupMaker.remote(), GroupMaker.remote(), GroupMaker.remote()
    orphan_group, held_group = ray.get([orphaned.make_group.remote(), held.make_group.remote()])
    # a trial Tune stops at the sweep's end: registered with a cleaner, never released by on_trial_complete
    ray.get(janitor.register.remote("janitor-test-trial", ray.get(held.actor_id.remote()), [cleaner]))
    try:
        ray.kill(orphaned)
        deadline = time.monotonic() + 60
        while _state(orphan_group) != "REMOVED":  # the Tune loop's steps
            assert time.monotonic() < deadline, "on_step_end never had the orphan removed"
            callback.on_step_end(iteration=0, trials=[])
            time.sleep(0.1)
        assert _state(held_group) == "CREATED"  # its creator lives
        ray.kill(held)
        callback.on_experiment_end(trials=[])
        assert _state(held_group) == "REMOVED"
        assert _dead(cleaner)
    finally:
        _remove([orphan_group, held_group], [cleaner, janitor])


def test_a_callback_saved_before_the_orphan_checks_restores_with_their_defaults():
    callback = ReleaseStoppedTrials(SweepSpec(name="old", source="test", base=None, base_config=RunConfig()))
    state = pickle.dumps(callback)
    restored = pickle.loads(state)
    for name in ("orphan_check_s", "_orphan_check", "_orphans_checked"):
        restored.__dict__.pop(name, None)  # what an older recfound pickled lacks
    assert (restored.orphan_check_s, restored._orphan_check, restored._orphans_checked) == (ORPHAN_CHECK_S, None, 0.0)
