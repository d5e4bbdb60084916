"""Ray Tune sweeps of training runs: Optuna (TPE), grid or random search over any dotted config path,
ASHA on the validation losses every checkpoint reports, a parent MLflow run with one child run per
trial, the trial table, the best config as a training config, and the paper's ablation grid.

    from recfound.tune import load_sweep, run_sweep
    spec = load_sweep("sweeps/s2sched.yaml", overrides=["trials=4"])  # checked: nothing starts yet
    report = run_sweep(spec)                                          # on this process's Ray cluster
    print(report.table()); print(report.best_config_path)

Loading a sweep imports neither torch nor Ray Tune; `run_sweep` does. Format: docs/sweeps.md.
"""

from recfound.tune.spec import Dimension, Resources, SweepSpec, load_sweep
from recfound.tune.trial import best_config, searched_config, trial_config

__all__ = ["Dimension", "Resources", "SweepReport", "SweepSpec", "best_config", "load_sweep", "run_sweep",
           "searched_config", "trial_config"]


def __getattr__(name: str):
    """`run_sweep` and `SweepReport` import Ray Tune: loaded on first use."""
    if name in ("run_sweep", "SweepReport"):
        from recfound.tune import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'recfound.tune' has no attribute {name!r}")
