"""The Tune trial: one full training run (`recfound.train.launch.run_training`) per trial.

`run_trial` is the Tune *function* trainable (the Ray 2.60 pattern for Ray Train inside Tune under
Train V2, where `Tuner(trainer)` is refused). It builds the trial's config and runs the training job
with `TuneReportCallback`, which forwards every checkpoint's `ray.train.report` (step, validation
losses) to the trial, so the search and ASHA see them; when the job returns, the trial reports once
more: the final validation losses, the test-split scores and `finished: 1`.

Two details of running a training job inside a trial:

- Tune schedules the trial in a placement group (`resources.trial_cpus`) that captures the trial's
  child tasks, so a Ray task the job starts (e.g. the evaluation's) would have to fit into that
  bundle. The job therefore runs in a small actor of its own, `TrialDriver`, scheduled outside the
  placement group; it is the trial's child, and dies with it.
- When ASHA stops a trial, Tune kills the trial's actor mid-run. The Train controller and workers die
  with it (Ray kills an actor's children), but the workers' placement group belongs to the job and
  stays reserved, and Ray Train's detached `PlacementGroupCleaner`, which should remove it, needs the
  State API (a dashboard): without one it never does, and it lives on, logging a warning a second.
  So `TrialResources` (a Ray Train callback of the trial's controller) registers each worker group's
  placement group and that cleaner with the sweep's `TrialJanitor` actor, and the sweep driver's
  `ReleaseStoppedTrials` (a Tune callback) kills the trial's driver and has the janitor remove the
  placement group and stop the cleaner when the trial ends. The callback reads two internals of Ray
  2.60's Train V2 (pinned in requirements.txt): the worker group's callbacks and Ray's cleaner handle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import ray
from ray import tune
from ray.train.v2._internal.execution.callback import WorkerGroupCallback  # Ray 2.60 (pinned)

from recfound.tasks import Kind, get_task
from recfound.tune.spec import SweepSpec
from recfound.tune.trial import trial_config, trial_run_name

FINISHED = "finished"  # set to 1 in a trial's final result: it trained to the end


def driver_name(run_name: str) -> str:
    """The Ray actor name of a trial's driver."""
    return f"recfound-trial-{run_name}"


def run_trial(params: dict[str, Any], spec: SweepSpec, parent_run_id: str) -> None:
    """The Tune function trainable: train the trial's config, nested under the sweep's parent run."""
    from ray.tune.integration.ray_train import TuneReportCallback

    config = trial_config(spec, params, tune.get_context().get_trial_id())
    callbacks = [TuneReportCallback(), TrialResources(janitor_name(spec.name), config.run.name)]
    driver = TrialDriver.options(name=driver_name(config.run.name), scheduling_strategy="DEFAULT").remote()
    try:
        result = ray.get(driver.train.remote(config, parent_run_id, callbacks))
    finally:
        ray.kill(driver)
    tune.report(result)


@ray.remote(num_cpus=0)  # what it runs reserves its own resources (Ray Data tasks, the Train workers)
class TrialDriver:
    """Runs one trial's training job outside the trial's placement group (see module doc)."""

    def train(self, config: Any, parent_run_id: str, callbacks: list[Any]) -> dict[str, Any]:
        from recfound.train.launch import run_training

        report = run_training(config, overwrite=True, parent_run_id=parent_run_id, callbacks=callbacks)
        return final_result(config.train.steps, report)


def final_result(steps: int, report: Any) -> dict[str, Any]:
    """The trial's last result: the final validation losses (the metric keys of every checkpoint
    report), each task's test score (`test/<task>`) and each kind's average (`test_avg/<kind>`)."""
    result: dict[str, Any] = {"step": steps, FINISHED: 1, "run_id": report.run_id}
    result.update(validation_means(report.last_val_loss))
    result.update({f"test/{task}": value for task, value in report.test_scores.items()})
    result.update({f"test_avg/{kind}": value for kind, value in report.test_averages.items()})
    return result


def validation_means(losses: Mapping[str, float]) -> dict[str, float]:
    """`val_loss/mean` over the tasks and `val_loss/<kind>` over each kind's tasks."""
    means = {"val_loss/mean": _mean(losses.values())}
    for kind in Kind:
        values = [value for task, value in losses.items() if get_task(task).kind is kind]
        if values:
            means[f"val_loss/{kind.value}"] = _mean(values)
    return means


def _mean(values: Any) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan


class TrialResources(WorkerGroupCallback):
    """A Ray Train controller callback: registers each started worker group's placement group, and Ray
    Train's cleaner actor of this controller, with the sweep's janitor under the trial's run name."""

    def __init__(self, janitor: str, run_name: str) -> None:
        self.janitor, self.run_name = janitor, run_name

    def after_worker_group_start(self, worker_group: Any) -> None:
        from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

        group = worker_group.get_worker_group_state().placement_group_handle.placement_group
        cleaners = [callback._cleaner for callback in worker_group._callbacks
                    if isinstance(callback, PlacementGroupCleanerCallback) and callback._cleaner is not None]
        ray.get(ray.get_actor(self.janitor).register.remote(self.run_name, group, cleaners))


@ray.remote(num_cpus=0)
class TrialJanitor:
    """What each trial holds that outlives it when Tune kills it: worker placement groups and Ray Train's
    cleaner actors, by trial run name. One per sweep driver (named `janitor_name(sweep)`), its child."""

    def __init__(self) -> None:
        self._held: dict[str, list[tuple[Any, list[Any]]]] = {}

    def register(self, run_name: str, group: Any, cleaners: list[Any]) -> None:
        self._held.setdefault(run_name, []).append((group, cleaners))

    def release(self, run_name: str) -> int:
        """Stop the trial's cleaners and remove its placement groups that still exist; how many were."""
        from ray.util.placement_group import placement_group_table, remove_placement_group

        removed = 0
        for group, cleaners in self._held.pop(run_name, []):
            for cleaner in cleaners:
                ray.kill(cleaner)  # a finished trial's cleaner has exited already: nothing happens
            if placement_group_table(group).get("state") not in (None, "REMOVED"):
                remove_placement_group(group)
                removed += 1
        return removed


def janitor_name(sweep: str) -> str:
    """The Ray actor name of a sweep driver's janitor."""
    return f"recfound-sweep-janitor-{sweep}"


class ReleaseStoppedTrials(tune.Callback):
    """A Tune callback of the sweep driver: when a trial ends (finished, stopped by ASHA or failed), its
    driver actor is killed if still alive, and the janitor releases what the trial registered."""

    def __init__(self, spec: SweepSpec, wait_s: float = 10.0) -> None:
        self.spec, self.wait_s = spec, wait_s
        self._janitor: Any = None

    def __getstate__(self) -> dict[str, Any]:  # Tune saves its callbacks with the experiment: no actor handle
        return {**self.__dict__, "_janitor": None}

    def setup(self, **info: Any) -> None:
        """Start the sweep's janitor (again, when a restored sweep starts a new driver)."""
        self._janitor = TrialJanitor.options(name=janitor_name(self.spec.name), get_if_exists=True).remote()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.release(trial)

    def release(self, trial: Any) -> None:
        run_name = trial_run_name(self.spec, trial.trial_id)
        _kill_driver(driver_name(run_name), self.wait_s)
        ray.get(self._janitor.release.remote(run_name))


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
