"""The sweep's janitor (recfound.tune.leftovers): once a trial's controller is killed, the placement groups
that controller created are removed, found by their creator in the GCS table, even one that nothing
registered (the group a controller creates an instant before Tune kills its trial). Groups that other
actors created are left alone."""

from __future__ import annotations

import ray
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
        for group in (killed_group, bystander_group):
            if _state(group) != "REMOVED":
                remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group)))
        for actor in (bystander, janitor):
            ray.kill(actor)
