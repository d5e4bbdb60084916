"""Evaluation reports: the paper's Table 2 / Table 3 shape, a before/after table, and MLflow logging.

Table 2 (generative) and Table 3 (embedding, one per retrieval protocol) have one row per model, one
column per task and the models' average rank over the tasks, "mean (std)", rank 1 being the best
(ties share the mean of their ranks). They are printed, logged as MLflow metrics (`test/<task>`,
`test/<kind>_avg`, prefixed by the model's role), and saved as artifacts under `evaluation/`:
`scores.json` (every score of every model, which `recfound eval compare` reads back), `tables.txt`,
`table.json` (an MLflow table for the UI) and `answers/<n>-<model>.jsonl` (every generated answer).
A column whose models were scored differently (another metric or protocol) says so in its header.
`log_evaluation_steps` logs models under one key per task at given steps (a training run: the base at
step 0, the trained model at its last step), which MLflow's charts show side by side.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recfound.eval.metrics import TaskScore
from recfound.eval.runner import ModelEvaluation
from recfound.progress import format_table
from recfound.tasks import Kind, get_task, task_names

SCORES_ARTIFACT = "evaluation/scores.json"


def average_ranks(rows: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """Per row (model): (mean, std) of its rank over the columns (tasks), higher values ranking first,
    ties sharing the mean of the ranks they span."""
    values = np.asarray(rows, dtype=float)
    ranks = np.zeros_like(values)
    for column in range(values.shape[1]):
        scores = values[:, column]
        for row, score in enumerate(scores):
            better, equal = int((scores > score).sum()), int((scores == score).sum())
            ranks[row, column] = better + (equal + 1) / 2
    return [(float(r.mean()), float(r.std())) for r in ranks]


def _column_name(evaluations: Sequence[ModelEvaluation], scores_of, task: str) -> str:
    """`TASK metric`, marked `(mixed: ...)` when the models were not scored alike on it (another metric,
    e.g. token F1 without a BERTScore encoder, or another protocol)."""
    kinds = sorted({(scores_of(e)[task].metric, scores_of(e)[task].protocol or "") for e in evaluations})
    name = f"{task} {kinds[0][0]}"
    return name if len(kinds) == 1 else f"{name} (mixed: {'; '.join(' '.join(k).strip() for k in kinds)})"


def _table(evaluations: Sequence[ModelEvaluation], scores_of, tasks: list[str]) -> str:
    header = ["model", *(_column_name(evaluations, scores_of, t) for t in tasks), "avg", "avg rank"]
    values = [[scores_of(e)[t].value for t in tasks] for e in evaluations]
    ranks = average_ranks(values) if len(evaluations) > 1 else [(1.0, 0.0)] * len(evaluations)
    rows = [[e.label, *(f"{v:.4f}" for v in row), f"{np.mean(row):.4f}", f"{mean:.2f} ({std:.2f})"]
            for e, row, (mean, std) in zip(evaluations, values, ranks)]
    return format_table(header, rows)


def comparison_tables(evaluations: Sequence[ModelEvaluation]) -> str:
    """Table 2 (generative) and Table 3 (embedding, per protocol) of the models, as text."""
    if not evaluations:
        raise ValueError("no evaluations to compare")
    parts = []
    generative = [t for t in task_names(Kind.GENERATIVE) if all(t in e.generative for e in evaluations)]
    if generative:
        parts.append("Generative tasks (Table 2 shape)\n" + _table(evaluations, lambda e: e.generative, generative))
    for protocol, group in evaluations[0].retrieval.items():
        tasks = [t for t in task_names(Kind.EMBEDDING) if all(t in e.retrieval.get(protocol, {}) for e in evaluations)]
        if tasks:
            described = group[tasks[0]].protocol
            parts.append(f"Embedding tasks (Table 3 shape), protocol: {described}\n"
                         + _table(evaluations, lambda e, p=protocol: e.retrieval[p], tasks))
    return "\n\n".join(parts)


def before_after_table(before: ModelEvaluation | None, after: ModelEvaluation) -> str:
    """Per task: metric, the base model's value (if evaluated), the trained model's, the change, and
    the trained model's invalid answers."""
    rows = []
    old = before.headline() if before else {}
    for task, score in after.headline().items():
        base = old.get(task)
        rows.append([task, get_task(task).kind.value, score.metric, f"{base.value:.4f}" if base else "-",
                     f"{score.value:.4f}", f"{score.value - base.value:+.4f}" if base else "-",
                     f"{score.invalid}/{score.count}"])
    header = ["task", "kind", "metric", before.label if before else "base", after.label, "change", "invalid"]
    return format_table(header, rows)


def improved_tasks(before: ModelEvaluation, after: ModelEvaluation) -> list[str]:
    """The tasks on which `after` scores strictly higher than `before`."""
    old = before.headline()
    return [task for task, score in after.headline().items() if task in old and score.value > old[task].value]


def headline_metrics(evaluation: ModelEvaluation, prefix: str) -> dict[str, float]:
    """`<prefix>/<task>` (each task's headline metric) and `<prefix>/<kind>_avg` of one model."""
    metrics = {f"{prefix}/{task}": score.value for task, score in evaluation.headline().items()}
    metrics.update({f"{prefix}/{kind}_avg": value for kind, value in evaluation.averages().items()})
    return metrics


def evaluation_metrics(evaluation: ModelEvaluation, prefix: str) -> dict[str, float]:
    """MLflow metrics of one model: `<prefix>/<task>` (headline), `<prefix>_full/<task>` (full pool when
    the headline is sampled), `<prefix>_invalid/<task>`, `<prefix>/<kind>_avg`."""
    metrics = headline_metrics(evaluation, prefix)
    metrics.update({f"{prefix}_invalid/{task}": float(score.invalid) for task, score in evaluation.headline().items()
                    if get_task(task).kind is Kind.GENERATIVE})
    if "sampled" in evaluation.retrieval and "full" in evaluation.retrieval:
        metrics.update({f"{prefix}_full/{t}": s.value for t, s in evaluation.retrieval["full"].items()})
    return metrics


def _log_metrics(tracking_uri: str, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log the finite `metrics` at `step`, at most 1000 per request."""
    from mlflow.entities import Metric

    from recfound.tracking.limits import METRICS_PER_BATCH, chunks, valid_key
    from recfound.tracking.store import client

    now = int(time.time() * 1000)
    entries = [Metric(valid_key(k), v, now, step) for k, v in metrics.items() if np.isfinite(v)]
    for batch in chunks(entries, METRICS_PER_BATCH):
        client(tracking_uri).log_batch(run_id, metrics=batch)


def log_evaluation_steps(tracking_uri: str, run_id: str, prefix: str,
                         points: Mapping[int, ModelEvaluation]) -> None:
    """Log {step: evaluation} under one key per task (`<prefix>/<task>`, `<prefix>/<kind>_avg`), each
    model's values at its step: e.g. {0: base, steps: trained}, which MLflow draws in one chart per task."""
    for step, evaluation in points.items():
        _log_metrics(tracking_uri, run_id, headline_metrics(evaluation, prefix), step)


def log_evaluations(tracking_uri: str, run_id: str, evaluations: Mapping[str, ModelEvaluation]) -> None:
    """Log {role: evaluation} (e.g. {"test_base": ..., "test": ...}) to run `run_id`: metrics prefixed by
    the role, and the artifacts of the module doc."""
    from recfound.tracking.limits import valid_key
    from recfound.tracking.runs import log_artifact_dir
    from recfound.tracking.store import client

    metrics = {}
    for role, evaluation in evaluations.items():
        metrics.update(evaluation_metrics(evaluation, valid_key(role)))
    _log_metrics(tracking_uri, run_id, metrics)
    with tempfile.TemporaryDirectory() as folder:
        write_evaluation_files(Path(folder) / "evaluation", evaluations)
        log_artifact_dir(tracking_uri, run_id, Path(folder) / "evaluation", "evaluation")
    client(tracking_uri).log_table(run_id, _table_rows(evaluations), "evaluation/table.json")


def answers_file(index: int, role: str) -> str:
    """A safe file name for a model's answers ('models:/a/1' -> '1-models_a_1.jsonl')."""
    return f"{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', role).strip('_') or 'model'}.jsonl"


def write_evaluation_files(folder: Path, evaluations: Mapping[str, ModelEvaluation]) -> None:
    """scores.json, tables.txt and answers/<n>-<role>.jsonl of {role: evaluation} into `folder` (which
    appears whole or not at all; an earlier evaluation folder there is replaced)."""
    from recfound.data.atomic import atomic_folder

    with atomic_folder(folder, "scores.json") as staging:
        scores = {role: e.to_dict() for role, e in evaluations.items()}
        (staging / "scores.json").write_text(json.dumps(scores, indent=1), encoding="utf-8")
        (staging / "tables.txt").write_text(comparison_tables(list(evaluations.values())) + "\n", encoding="utf-8")
        answers = staging / "answers"
        answers.mkdir()
        for index, (role, evaluation) in enumerate(evaluations.items()):
            lines = [json.dumps({"model": role, "task": task, "index": i, "answer": answer})
                     for task, task_answers in evaluation.answers.items() for i, answer in enumerate(task_answers)]
            (answers / answers_file(index, role)).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _table_rows(evaluations: Mapping[str, ModelEvaluation]) -> dict[str, list]:
    """Columns of one row per (model, task, protocol) for MLflow's table view."""
    rows: dict[str, list] = {"model": [], "role": [], "task": [], "metric": [], "protocol": [], "value": [],
                             "invalid": [], "count": []}
    for role, evaluation in evaluations.items():
        scores: list[TaskScore] = list(evaluation.generative.values())
        scores += [s for group in evaluation.retrieval.values() for s in group.values()]
        for score in scores:
            for key, value in (("model", evaluation.label), ("role", role), ("task", score.task),
                               ("metric", score.metric), ("protocol", score.protocol or ""), ("value", score.value),
                               ("invalid", score.invalid), ("count", score.count)):
                rows[key].append(value)
    return rows


def read_logged_evaluations(tracking_uri: str, run: str) -> dict[str, ModelEvaluation]:
    """{role: evaluation} logged to an MLflow run, given its id or its name (the latest run of that name)."""
    import mlflow

    from recfound.tracking.store import client

    mlflow_client = client(tracking_uri)
    run_id = _run_id(mlflow_client, run)
    with tempfile.TemporaryDirectory(prefix="recfound-compare-") as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SCORES_ARTIFACT,
                                                       tracking_uri=tracking_uri, dst_path=folder)
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise FileNotFoundError(f"run {run!r} ({run_id}) has no {SCORES_ARTIFACT}: was it evaluated?") from err
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {role: ModelEvaluation.from_dict(item) for role, item in data.items()}


def _run_id(mlflow_client, run: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_run(run).info.run_id
    except MlflowException:
        pass
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    found = mlflow_client.search_runs(experiments, filter_string=f"attributes.run_name = '{run}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise KeyError(f"no MLflow run with id or name {run!r}")
    return found[0].info.run_id
