"""The Tune trial: one full training run (`recfound.job.run_training`) per trial.

`run_trial` is the Tune *function* trainable (the Ray 2.60 pattern for Ray Train inside Tune under
Train V2, where `Tuner(trainer)` is refused). It builds the trial's config and runs the training job
with `TuneReportCallback`, which forwards every checkpoint's `ray.train.report` (step, validation
losses) to the trial, so the search and ASHA see them; when the job returns, the trial reports once
more: the final validation losses, the test-split scores and `finished: 1`. A trial started again (a
restored sweep, a retried trial) finds its run folder and resumes its training from the latest
checkpoint Ray Train registered there, as a rerun training job does (`recfound.train.resume`), into
the same MLflow run; without one it starts over. One whose training had already finished (the sweep was
interrupted after the run ended but before Tune recorded the trial's end) reports that run's final
result, read back from its MLflow run, instead of training again.

Running a training job inside a trial: Tune schedules the trial in a placement group
(`resources.trial_cpus`) that captures the trial's child tasks, so a Ray task the job starts (e.g. the
evaluation's) would have to fit into that bundle. The job therefore runs in a small actor of its own,
`TrialDriver`, scheduled outside the placement group; it is the trial's child, and dies with it. What
a trial that Tune kills leaves behind is released by `recfound.tune.leftovers`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import ray
from ray import tune

from recfound.tasks import Kind, get_task
from recfound.tune.leftovers import TrialResources, driver_name, janitor_name
from recfound.tune.spec import SweepSpec
from recfound.tune.trial import trial_config

FINISHED = "finished"  # set to 1 in a trial's final result: it trained to the end


def run_trial(params: dict[str, Any], spec: SweepSpec, parent_run_id: str) -> None:
    """The Tune function trainable: train the trial's config, nested under the sweep's parent run."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from recfound.cluster import on_this_node

    config = trial_config(spec, params, tune.get_context().get_trial_id())
    callbacks = [TuneReportCallback(), TrialResources(janitor_name(spec.name), config.run.name)]
    # On the trial's node (the head, see runner._tuner): a restarted trial's driver runs on the host its
    # run folder's marker names, which a run on a bucket requires (recfound.run_folder).
    driver = TrialDriver.options(name=driver_name(config.run.name), scheduling_strategy=on_this_node()).remote()
    try:
        result = ray.get(driver.train.remote(config, parent_run_id, callbacks))
    finally:
        ray.kill(driver)
    tune.report(result)


@ray.remote(num_cpus=0)  # what it runs reserves its own resources (Ray Data tasks, the Train workers)
class TrialDriver:
    """Runs one trial's training job outside the trial's placement group (see module doc)."""

    def train(self, config: Any, parent_run_id: str, callbacks: list[Any]) -> dict[str, Any]:
        return train_trial(config, parent_run_id, callbacks)


def train_trial(config: Any, parent_run_id: str, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (or resume, see module doc) the trial's run; its final result."""
    from recfound import storage
    from recfound.job import run_training
    from recfound.run_layout import RunLayout
    from recfound.train.resume import latest_registered_checkpoint

    layout = RunLayout(config.run_dir())
    if storage.is_file(layout.summary):
        return recorded_result(config, parent_run_id)
    start_over = latest_registered_checkpoint(layout) is None  # nothing to resume from
    report = run_training(config, overwrite=start_over, parent_run_id=parent_run_id, callbacks=callbacks)
    return final_result(config.train.steps, report.run_id, report.last_val_loss, report.test_scores,
                        report.test_averages)


def final_result(steps: int, run_id: str, val_losses: Mapping[str, float], test_scores: Mapping[str, float],
                 test_averages: Mapping[str, float]) -> dict[str, Any]:
    """The trial's last result: the final validation losses (the metric keys of every checkpoint
    report), each task's test score (`test/<task>`) and each kind's average (`test_avg/<kind>`)."""
    result: dict[str, Any] = {"step": steps, FINISHED: 1, "run_id": run_id}
    result.update(validation_means(val_losses))
    result.update({f"test/{task}": value for task, value in test_scores.items()})
    result.update({f"test_avg/{kind}": value for kind, value in test_averages.items()})
    return result


def recorded_result(config: Any, parent_run_id: str) -> dict[str, Any]:
    """`final_result` of the trial's finished run, from the last values its MLflow run logged (the trial's
    run, nested under the sweep's parent run under the trial's run name)."""
    import mlflow

    client = mlflow.MlflowClient(config.tracking_uri())
    experiment = client.get_experiment_by_name(config.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id] if experiment else [],
                              f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.run_name = '{config.run.name}'")
    if len(runs) != 1:
        raise RuntimeError(f"run {config.run.name!r} finished, but {len(runs)} MLflow runs of that name are under the "
                           f"sweep's parent run {parent_run_id}: its result cannot be read back; rerun the sweep "
                           "with another name")
    from recfound.eval.job import roles

    metrics = runs[0].data.metrics
    tasks = config.task_names()
    role = roles(config.eval.split)[0]  # the trained model's scores: <role>/<task>, <role>/<kind>_avg

    def logged(prefix: str, names: list[str], suffix: str = "") -> dict[str, float]:
        return {name: metrics[key] for name in names if (key := f"{prefix}{name}{suffix}") in metrics}

    return final_result(config.train.steps, runs[0].info.run_id, logged("val_loss/", tasks), logged(f"{role}/", tasks),
                        logged(f"{role}/", [kind.value for kind in Kind], "_avg"))


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
