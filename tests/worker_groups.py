"""How the suite shares out over pytest-xdist workers (`make test` runs `pytest -n 2`), longest work first
and the end balanced: most modules that run whole jobs (training runs, a sweep, clusters of their own)
start at once on one worker, one after the other, while the other worker takes everything else and
then the two remaining job modules. Every module stays whole on one worker, and the modules that share
an expensive session fixture stay together, so that it is computed once.

Why not every job module in one queue of their own: that worker then ran 10 minutes while the other sat
idle for the last 3 (2026-12-04). Why not two job modules at once from the start: on 2 cores, the sweep
beside the multi-node run (each several Ray processes importing torch together) took twice as long, and
the multi-node run's `ray start` nodes missed Ray's 30 s start-up deadline."""

from __future__ import annotations

import pytest

WHOLE_JOBS = "whole-jobs"
# The job modules run one after the other on one worker from the start (test_eval_catalog, test_multinode and
# test_train_job share the `baseline` fixture, one whole training job).
WHOLE_JOB_MODULES = ("test_eval_catalog.py", "test_multinode.py", "test_sweep_run.py", "test_train_job.py")
# The job modules that share nothing: last in the queue, for whichever worker is free first.
LAST_JOB_MODULES = ("test_cloud_cluster.py", "test_logs_demo.py")
# The other session fixtures worth computing once, and the modules that use them.
SHARED_SESSION_FIXTURES = {
    "two_gloo_ranks": ("test_train_deepspeed.py", "test_train_step.py"),  # two spawned DeepSpeed ranks
    "smollm2_cache": ("test_model_backbone.py", "test_streams.py"),  # the converted SmolLM2 GGUF
}
MODULE_GROUP = {module: fixture for fixture, modules in SHARED_SESSION_FIXTURES.items() for module in modules}
MODULE_GROUP.update({module: WHOLE_JOBS for module in WHOLE_JOB_MODULES})


def group_of(nodeid: str) -> str:
    """The worker group of a test: its module's group, else its module's file name."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return MODULE_GROUP.get(module, module)


def queue_position(nodeid: str) -> int:
    """0 for the whole-jobs group, 2 for LAST_JOB_MODULES, 1 for everything else."""
    group = group_of(nodeid)
    return 0 if group == WHOLE_JOBS else 2 if group in LAST_JOB_MODULES else 1


def in_queue_order(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, put the tests in queue order (the scheduler builds its queue from the workers'
    collection, the same on every worker); everything keeps its order otherwise."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: queue_position(item.nodeid))


def make_scheduler(config: pytest.Config, log):
    """xdist's scope scheduler over these groups for `-n N` (its `load` default); None (xdist's own) for the
    other modes (`--dist loadgroup` keeps its `xdist_group` marks)."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.dsession import get_default_max_worker_restart
    from xdist.scheduler import LoadScopeScheduling

    no_replacement = get_default_max_worker_restart(config) == 0

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def _reschedule(self, node) -> None:
            # xdist gives a worker its next group when 2 of its tests are left, which lets the whole-jobs worker
            # take a last job module minutes before it could start it. With 1 left the worker is idle: an
            # xdist worker starts its last test only once it has a next one or is told to stop.
            if self.workqueue and self._pending_of(self.assigned_work[node]) > 1:
                return
            super()._reschedule(node)

        def remove_node(self, node) -> str | None:
            # A worker that died (its test passed its time limit) with no replacement allowed: its group is not
            # queued again, where another worker would run the blocked test once more.
            if not no_replacement:
                return super().remove_node(node)
            workload = self.assigned_work.pop(node)
            return next((nodeid for unit in workload.values() for nodeid, done in unit.items() if not done), None)

    config.option.loadscopereorder = False  # the queue's order is the collection's (in_queue_order)
    return ModuleGroupScheduling(config, log)
