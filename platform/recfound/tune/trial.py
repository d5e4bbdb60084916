"""From a sweep and one trial's parameters to that trial's training config, and the checks that every
config a sweep can produce is one the training job accepts (run before any trial starts).

A trial's parameters are Tune's config of the trial: `{"variant": name}` (when the sweep has
variants) and one entry per searched dotted path, e.g. `{"sched.window": 16}`. Its config is, in
order: the base config (file, sweep overrides, resources), the variant's overrides, the searched
values; then the per-trial settings (`run.name`, no registry, absolute paths).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

from recfound.config import ConfigError, RunConfig
from recfound.tune.spec import SweepSpec, absolute_paths

VARIANT_KEY = "variant"  # the trial parameter that names the variant
MAX_COMBINATIONS = 256  # above this, the space is checked one dimension at a time


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


# --- checks before the sweep starts ------------------------------------------------------------------


def check_trial_configs(spec: SweepSpec) -> None:
    """Build the configs the sweep can produce (every variant; each searched value alone: range bounds,
    every listed value; and all their combinations when there are at most MAX_COMBINATIONS) and raise a
    ConfigError naming the sweep key of the first one a trial could not run."""
    try:
        for variant in list(spec.variants) or [None]:
            base = _variant_config(spec, variant)
            try:
                check_sweepable(spec, base)
            except ConfigError as error:
                if error.key.startswith("asha."):
                    raise
                raise error.within("overrides" if variant is None else f"variants.{variant}") from None
            for dimension in spec.space:
                for value in dimension.candidates():
                    _check_values(spec, base, {dimension.path: value}, f"space.{dimension.path}", variant)
            for combination in _combinations(spec):
                _check_values(spec, base, combination, "space", variant)
    except ConfigError as error:
        raise error.sourced(spec.source) from None


def check_sweepable(spec: SweepSpec, config: RunConfig) -> None:
    """What a trial needs beyond a valid training config: a validation loss in every checkpoint report
    (the metric Tune and ASHA read), and ASHA's first rung before the last step."""
    steps, every, interval = config.train.steps, config.checkpoint.every, config.sched.eval_interval
    if interval > min(every, steps):
        raise ConfigError("sched.eval_interval", f"must be <= checkpoint.every ({every}) in a sweep: every "
                                                 f"checkpoint reports a validation loss to Tune (got {interval})")
    if spec.scheduler == "asha":
        last, grace = last_checkpoint_before_end(config), spec.grace_period or every
        if last == 0:
            raise ConfigError("checkpoint.every", f"must be < train.steps ({steps}) under ASHA, which stops trials "
                                                  f"at checkpoints before the last step (got {every})")
        if grace > last:
            key = "asha.grace_period" if spec.grace_period else "checkpoint.every"
            default = "" if spec.grace_period else ", ASHA's default grace period,"
            raise ConfigError(key, f"{grace}{default} must be <= {last}, the last checkpoint before the last "
                                   f"step ({steps}): ASHA stops trials only there")


def last_checkpoint_before_end(config: RunConfig) -> int:
    """The step of the last checkpoint before `train.steps` (0: none)."""
    return (config.train.steps - 1) // config.checkpoint.every * config.checkpoint.every


def _variant_config(spec: SweepSpec, variant: str | None) -> RunConfig:
    if variant is None:
        return spec.base_config
    try:
        return spec.base_config.with_overrides(spec.variants[variant])
    except ConfigError as error:
        raise ConfigError(f"variants.{variant}.{error.key}", error.reason) from None


def _combinations(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every combination of the dimensions' candidate values (none when too many, or only one dimension)."""
    candidates = [dimension.candidates() for dimension in spec.space]
    if len(candidates) < 2 or math.prod(len(values) for values in candidates) > MAX_COMBINATIONS:
        return
    paths = [dimension.path for dimension in spec.space]
    for values in itertools.product(*candidates):
        yield dict(zip(paths, values))


def _check_values(spec: SweepSpec, base: RunConfig, values: Mapping[str, Any], key: str,
                  variant: str | None) -> None:
    where = f" in variant {variant!r}" if variant is not None else ""
    shown = ", ".join(f"{path}={_show(value)}" for path, value in values.items())
    try:
        check_sweepable(spec, base.with_overrides(values))
    except ConfigError as error:
        raise ConfigError(key, f"{shown}{where} gives a config a trial cannot run: {_inner(error)}") from None


def _inner(error: ConfigError) -> str:
    return f"{error.key}: {error.reason}" if error.key else error.reason


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
