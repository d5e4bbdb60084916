"""The sweep's janitor (recfound.tune.leftovers): once a trial's controller is killed, the placement groups
that controller created are removed, found by their creator in the GCS table, even one that nothing
registered (the group a controller creates an instant before Tune kills its trial). Groups that other
actors created are left alone. Any group of the job whose creating actor is dead (an orphan) is removed
when the janitor looks for orphans, registered or not; the driver's own groups and live actors' stay."""

from __future__ import annotations

import time

import ray
from ray._private.state import actors
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

from recfound.tune.leftovers import TrialJanitor


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


def _remove(groups: list[str], actors: list) -> None:
    for group in groups:
        if _state(group) != "REMOVED":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group)))
    for actor in actors:
        ray.kill(actor)


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
