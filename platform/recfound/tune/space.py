"""A `SweepSpec` as Ray Tune objects: the parameter space, the search algorithm and the trial scheduler.

- Ranges: `uniform` -> `tune.uniform`, `loguniform` -> `tune.loguniform`, `int` -> `tune.randint` (or
  `tune.lograndint` with `log: true`), both bounds included (Tune's upper bound is exclusive, so it
  gets high + 1).
- Values: `choice` -> `tune.choice` (under `search: grid`, every value is tried: `tune.grid_search`),
  `grid` -> `tune.grid_search`. Variants are one more parameter, `variant`: a grid over their names,
  or a choice among them under Optuna.
- Search: `optuna` -> `OptunaSearch` (TPE, seeded), `grid` / `random` -> Tune's `BasicVariantGenerator`
  (grid entries enumerated, the rest sampled, seeded); `trials` is Tune's `num_samples`.
- Scheduler: `asha` -> `ASHAScheduler` on the reported `step`, with its rungs at
  grace_period * reduction_factor^k up to the base config's last checkpoint before its final step, and
  `stop_last_trials=False`: a trial that reaches its last step always finishes (merge, evaluation).
"""

from __future__ import annotations

from typing import Any

from recfound.tune.spec import Dimension, SweepSpec, last_checkpoint_before_end
from recfound.tune.trial import VARIANT_KEY

TIME_ATTR = "step"  # what ASHA counts: the training step every report carries


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's `param_space`: {"variant": ..., "<dotted path>": <domain>, ...} (flat: Tune nests on '/')."""
    from ray import tune

    space: dict[str, Any] = {}
    if spec.variants:
        names = list(spec.variants)
        space[VARIANT_KEY] = tune.choice(names) if spec.search == "optuna" else tune.grid_search(names)
    for dimension in spec.space:
        space[dimension.path] = domain(dimension, spec.search)
    return space


def domain(dimension: Dimension, search: str) -> Any:
    """The Tune domain of one dimension (bounds inclusive)."""
    from ray import tune

    if dimension.type == "uniform":
        return tune.uniform(dimension.low, dimension.high)
    if dimension.type == "loguniform":
        return tune.loguniform(dimension.low, dimension.high)
    if dimension.type == "int":
        sample = tune.lograndint if dimension.log else tune.randint
        return sample(int(dimension.low), int(dimension.high) + 1)
    values = list(dimension.values)
    if dimension.type == "grid" or search == "grid":
        return tune.grid_search(values)
    return tune.choice(values)


def search_algorithm(spec: SweepSpec) -> Any:
    """Optuna's TPE (seeded) or Tune's basic variant generator (grid and random search, seeded)."""
    if spec.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=spec.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune applies max_concurrent_trials only to a Searcher: a generator must be given its limit itself.
    return BasicVariantGenerator(max_concurrent=spec.max_concurrent_trials, random_state=spec.seed)


def trial_scheduler(spec: SweepSpec) -> Any:
    """ASHA on `step` (see module doc), or None (every trial runs to its end)."""
    if spec.scheduler == "none":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr=TIME_ATTR, max_t=last_checkpoint_before_end(spec.base_config),
                         grace_period=spec.grace_period or spec.base_config.checkpoint.every,
                         reduction_factor=spec.reduction_factor, stop_last_trials=False)
