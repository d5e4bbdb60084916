"""From a sweep and one trial's parameters to that trial's training config (the checks that every config
a sweep can produce is one a trial can run are `recfound.tune.spec.check_trial_configs`).

A trial's parameters are Tune's config of the trial: `{"variant": name}` (when the sweep has
variants) and one entry per searched dotted path, e.g. `{"sched.window": 16}`. Its config is, in
order: the base config (file, sweep overrides, resources), the variant's overrides, the searched
values; then the per-trial settings (`run.name`, no registry, absolute paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recfound.config import RunConfig
from recfound.tune.spec import SweepSpec, absolute_paths

VARIANT_KEY = "variant"  # the trial parameter that names the variant


def trial_run_name(spec: SweepSpec, trial_id: str) -> str:
    """The run name of a trial: `<sweep>-<Tune trial id>` (run folder, MLflow run, scheduler actor)."""
    return f"{spec.name}-{trial_id}"


def best_run_name(spec: SweepSpec) -> str:
    """The run name written into the best config: `<sweep>-best`."""
    return f"{spec.name}-best"


def searched_overrides(spec: SweepSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The dotted overrides one trial applies to the base config: its variant's, then its searched values."""
    overrides = dict(spec.variants[params[VARIANT_KEY]]) if spec.variants else {}
    overrides.update({dimension.path: params[dimension.path] for dimension in spec.space})
    return overrides


def searched_config(spec: SweepSpec, params: Mapping[str, Any]) -> RunConfig:
    """The base config with the trial's variant and searched values (paths as the sweep gave them)."""
    return spec.base_config.with_overrides(searched_overrides(spec, params), source=spec.source)


def best_config(spec: SweepSpec, params: Mapping[str, Any]) -> RunConfig:
    """The ready-to-train config of a trial: its searched config, named `<sweep>-best`, registering
    under the base config's `mlflow.register_as` (trials themselves register nothing)."""
    return searched_config(spec, params).with_overrides({"run.name": best_run_name(spec)}, source=spec.source)


def trial_config(spec: SweepSpec, params: Mapping[str, Any], trial_id: str) -> RunConfig:
    """What a trial trains: the searched config with its own run name, no model registration, every
    path made absolute against `spec.workdir` (a Tune trial runs in a working folder of its own), and
    the sweep's tracking store (`spec.tracking_uri`), so that every trial is a child in the parent's."""
    return absolute_paths(searched_config(spec, params), spec.workdir).with_overrides({
        "run.name": trial_run_name(spec, trial_id), "mlflow.register_as": None,
        "mlflow.tracking_uri": spec.tracking_uri, "mlflow.artifact_root": spec.artifact_root}, source=spec.source)

