"""What a sweep ends with: one row per trial (searched values, metric, status), the trial table, the
Table-4-shaped comparison of a sweep with variants (and, when each variant ran more than once, its mean and
spread), and the best config as a training config file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfound.data.atomic import atomic_write_bytes
from recfound.progress import format_table
from recfound.tune.spec import SweepSpec
from recfound.tune.trainable import FINISHED
from recfound.tune.trial import VARIANT_KEY, best_config

FINISHED_STATUS, STOPPED_STATUS, ERROR_STATUS, UNFINISHED_STATUS = "finished", "stopped by ASHA", "error", "unfinished"
KINDS = ("generative", "embedding")  # the columns of the paper's Table 4
SEED_KEY = "run.seed"  # what a summary over repeated trials averages over


@dataclass(frozen=True)
class TrialRow:
    """One trial as the sweep ends: its parameters, last reported step and metric, and status."""

    trial_id: str
    params: dict[str, Any]
    status: str
    metric: float | None = None
    step: int | None = None
    val_losses: dict[str, float] = field(default_factory=dict)
    test_averages: dict[str, float] = field(default_factory=dict)  # kind -> mean test score
    run_id: str | None = None  # the trial's MLflow run (a child of the sweep's parent run)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "params": self.params, "status": self.status, "metric": self.metric,
                "step": self.step, "val_losses": self.val_losses, "test_averages": self.test_averages,
                "run_id": self.run_id, "error": self.error}


def trial_row(trial_id: str, params: dict[str, Any], metrics: dict[str, Any], error: str | None,
              spec: SweepSpec, ended: bool) -> TrialRow:
    """A row from a trial's last result (Tune's `Result.metrics`) and error, if any."""
    if error:
        status = ERROR_STATUS
    elif metrics.get(FINISHED):
        status = FINISHED_STATUS
    elif ended:
        status = STOPPED_STATUS if spec.scheduler == "asha" else "stopped"
    else:
        status = UNFINISHED_STATUS
    metric = metrics.get(spec.metric)
    return TrialRow(
        trial_id=trial_id, params=params, status=status, metric=None if metric is None else float(metric),
        step=metrics.get("step"), run_id=metrics.get("run_id"), error=error,
        val_losses={key: float(value) for key, value in metrics.items() if key.startswith("val_loss/")},
        test_averages={key.split("/", 1)[1]: float(value) for key, value in metrics.items()
                       if key.startswith("test_avg/")})


def best_row(spec: SweepSpec, rows: list[TrialRow]) -> TrialRow | None:
    """The finished trial with the best finite metric (by `mode`), or None."""
    finished = [row for row in rows if row.status == FINISHED_STATUS and _finite(row.metric)]
    if not finished:
        return None
    pick = min if spec.mode == "min" else max
    return pick(finished, key=lambda row: row.metric)


def trial_table(spec: SweepSpec, rows: list[TrialRow], best: TrialRow | None = None) -> str:
    """trial id, the searched values, the last step, the metric, the status (the best one marked)."""
    keys = _param_keys(spec)
    header = ["trial", *keys, "step", spec.metric, "status"]
    body = [[row.trial_id + (" *" if best is not None and row.trial_id == best.trial_id else ""),
             *(_cell(row.params.get(key)) for key in keys), _cell(row.step), _number(row.metric, 4),
             row.status] for row in rows]
    return format_table(header, body)


def ablation_table(spec: SweepSpec, rows: list[TrialRow]) -> str:
    """The paper's Table 4 shape: variant, generative (avg.), embedding (avg.) of the test scores,
    and the metric (a validation loss), in the order of the sweep's variants."""
    order = {name: i for i, name in enumerate(spec.variants)}
    keys = [key for key in _param_keys(spec) if key != VARIANT_KEY]
    header = ["variant", *keys, "generative (avg.)", "embedding (avg.)", spec.metric, "status"]
    ordered = sorted(rows, key=lambda row: order.get(row.params.get(VARIANT_KEY), len(order)))
    body = [[row.params.get(VARIANT_KEY, "-"), *(_cell(row.params.get(key)) for key in keys),
             *(_number(row.test_averages.get(kind), 3) for kind in KINDS), _number(row.metric, 4), row.status]
            for row in ordered]
    return format_table(header, body)


def variant_summary(spec: SweepSpec, rows: list[TrialRow]) -> str | None:
    """Per variant (and value of every other searched key but `run.seed`) over its finished trials: their
    count, and the mean and sample standard deviation of the generative and embedding test averages and of
    the metric; None unless some group finished more than once (variants crossed with seeds, say)."""
    keys = [key for key in _param_keys(spec) if key not in (VARIANT_KEY, SEED_KEY)]
    groups: dict[tuple[str, ...], list[TrialRow]] = {}
    for row in rows:
        if row.status == FINISHED_STATUS and row.params.get(VARIANT_KEY) in spec.variants:
            groups.setdefault((row.params[VARIANT_KEY], *(_cell(row.params.get(key)) for key in keys)), []).append(row)
    if all(len(trials) < 2 for trials in groups.values()):
        return None
    for name in spec.variants:  # a variant that never finished still gets its row
        if not any(group[0] == name for group in groups):
            groups[(name, *["-"] * len(keys))] = []
    order = {name: i for i, name in enumerate(spec.variants)}
    header = ["variant", *keys, "trials", "generative (avg.)", "embedding (avg.)", spec.metric]
    body = [[*group, str(len(trials)), *(_spread([row.test_averages.get(kind) for row in trials], 3) for kind in KINDS),
             _spread([row.metric for row in trials], 4)]
            for group, trials in sorted(groups.items(), key=lambda item: (order[item[0][0]], item[0][1:]))]
    return format_table(header, body)


def _spread(values: list[float | None], digits: int) -> str:
    """'mean ± sd' (sample standard deviation) of the values present, '(n=K)' after it when some are
    missing (a trial that did not evaluate); '-' when none are."""
    present = [value for value in values if _finite(value)]
    if not present:
        return "-"
    mean = sum(present) / len(present)
    text = f"{mean:.{digits}f}"
    if len(present) > 1:
        sd = math.sqrt(sum((value - mean) ** 2 for value in present) / (len(present) - 1))
        text += f" ± {sd:.{digits}f}"
    return text if len(present) == len(values) else f"{text} (n={len(present)})"


def write_best_config(spec: SweepSpec, best: TrialRow, path: Path) -> Path:
    """The best trial's config as a training config (`recfound train --config PATH`), with a header."""
    config = best_config(spec, best.params)
    header = [f"# The best trial of sweep {spec.name!r} ({spec.source}): trial {best.trial_id}, "
              f"{spec.metric} = {best.metric:.6g} ({spec.mode}).",
              f"# Searched values: {json.dumps(best.params, sort_keys=True)}.",
              "# Train it with: recfound train --config " + str(path)]
    atomic_write_bytes(path, ("\n".join(header) + "\n" + config.to_yaml()).encode("utf-8"))
    return path


def _param_keys(spec: SweepSpec) -> list[str]:
    return ([VARIANT_KEY] if spec.variants else []) + [dimension.path for dimension in spec.space]


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
