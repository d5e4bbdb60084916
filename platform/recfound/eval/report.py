"""Evaluation reports: the paper's Table 2 / Table 3 shape, a before/after table, and MLflow logging.

Table 2 (generative) and Table 3 (embedding, one per retrieval protocol) have one row per model, one
column per task and the models' average rank over the tasks, "mean (std)", rank 1 being the best
(ties share the mean of their ranks). They are printed, logged as MLflow metrics (`test/<task>`,
`test/<kind>_avg`, prefixed by the model's role), and saved as artifacts under `evaluation/`:
`scores.json` (every score of every model, which `recfound eval compare` reads back), `tables.txt`,
`table.json` (an MLflow table for the UI) and `answers/<n>-<model>.jsonl` (every generated answer).
A column whose models were scored differently (another metric, protocol or scoring) says so in its header;
a number scored by the authors' rules (`eval.scoring: authors`) is marked `[authors]` wherever its metric
is named, and `table.json` has a `scoring` column.
`log_evaluation_steps` logs models under one key per task at given steps (a training run: the base at
step 0, the trained model at its last step), which MLflow's charts show side by side. A training run's
before/after table has each change's 95% interval (a paired bootstrap, `recfound.eval.paired`), also
logged as `<split>_change_low/<task>` and `<split>_change_high/<task>`.

On a data root built from logs, the full-catalog table (`catalog_report`) puts the models beside the
baselines of `recfound.eval.catalog` (Recall@10, NDCG@10, MRR@k per task, SR's recall@1) and names every
metric on which a model is below a baseline; the baselines are logged beside the models (metrics under
their role, `evaluation/baselines.json`, rows of `table.json`, the tag `below_baselines`).
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
from recfound.eval.paired import Interval, verdicts
from recfound.eval.retrieval import CATALOG
from recfound.eval.runner import ModelEvaluation
from recfound.progress import format_table
from recfound.redact import without_password
from recfound.tasks import Kind, get_task, task_names

SCORES_FILE = "scores.json"  # what marks a folder of write_evaluation_files
SCORES_ARTIFACT = f"evaluation/{SCORES_FILE}"
BASELINES_FILE = "baselines.json"


def average_ranks(rows: Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    """Per row (model): (mean, std) of its rank over the columns (tasks), higher values ranking first,
    ties sharing the mean of the ranks they span; a NaN score ranks last."""
    values = np.nan_to_num(np.asarray(rows, dtype=float), nan=-np.inf)
    ranks = np.zeros_like(values)
    for column in range(values.shape[1]):
        scores = values[:, column]
        for row, score in enumerate(scores):
            better, equal = int((scores > score).sum()), int((scores == score).sum())
            ranks[row, column] = better + (equal + 1) / 2
    return [(float(r.mean()), float(r.std())) for r in ranks]


def metric_name(score: TaskScore) -> str:
    """The score's metric, marked `[authors]` when the authors' scoring rules produced it."""
    return score.metric if score.scoring == "ours" else f"{score.metric} [{score.scoring}]"


def _column_name(evaluations: Sequence[ModelEvaluation], scores_of, task: str) -> str:
    """`TASK metric`, marked `(mixed: ...)` when the models were not scored alike on it (another metric,
    e.g. token F1 without a BERTScore encoder, another protocol or other scoring rules)."""
    kinds = sorted({(metric_name(scores_of(e)[task]), scores_of(e)[task].protocol or "") for e in evaluations})
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
    parts, left_out = [], []
    generative = [t for t in task_names(Kind.GENERATIVE) if all(t in e.generative for e in evaluations)]
    left_out += sorted({t for e in evaluations for t in e.generative} - set(generative))
    if generative:
        parts.append("Generative tasks (Table 2 shape)\n" + _table(evaluations, lambda e: e.generative, generative))
    for protocol in dict.fromkeys(p for e in evaluations for p in e.retrieval):  # in the order they were evaluated
        tasks = [t for t in task_names(Kind.EMBEDDING) if all(t in e.retrieval.get(protocol, {}) for e in evaluations)]
        left_out += [f"{t} ({protocol})" for t in sorted({t for e in evaluations for t in e.retrieval.get(protocol, {})}
                                                           - set(tasks))]
        if tasks:
            described = evaluations[0].retrieval[protocol][tasks[0]].protocol  # every model has the task
            parts.append(f"Embedding tasks (Table 3 shape), protocol: {described}\n"
                         + _table(evaluations, lambda e, p=protocol: e.retrieval[p], tasks))
    if not parts:
        raise ValueError(f"the evaluations share no task to compare (each has only some of: {', '.join(left_out)})")
    if left_out:
        parts.append(f"not compared (not evaluated for every model): {', '.join(left_out)}")
    return "\n\n".join(parts)


def before_after_table(before: ModelEvaluation | None, after: ModelEvaluation,
                       intervals: Mapping[str, Interval] | None = None) -> str:
    """Per task: metric, the base model's value (if evaluated), the trained model's, the change, its 95%
    interval (when `intervals` are given, recfound.eval.paired), and the trained model's invalid answers."""
    rows = []
    old = before.headline() if before else {}
    for task, score in after.headline().items():
        base = old.get(task)
        row = [task, get_task(task).kind.value, metric_name(score), f"{base.value:.4f}" if base else "-",
               f"{score.value:.4f}", f"{score.value - base.value:+.4f}" if base else "-"]
        if intervals:
            row.append(f"[{intervals[task][0]:+.3f}, {intervals[task][1]:+.3f}]" if task in intervals else "-")
        rows.append([*row, f"{score.invalid}/{score.count}"])
    header = ["task", "kind", "metric", before.label if before else "base", after.label, "change",
              *(["95% interval"] if intervals else []), "invalid"]
    return format_table(header, rows)


def noise_line(intervals: Mapping[str, Interval]) -> str:
    """One line: on how many tasks the change's 95% interval lies above 0, below 0, or holds 0 (named)."""
    groups = verdicts(intervals)

    def part(name: str) -> str:
        tasks = groups[name]
        return f"{name} on {len(tasks)}" + (f" ({', '.join(tasks)})" if tasks and name != "better" else "")

    return (f"paired bootstrap of the {len(intervals)} tasks' test records (95%): "
            f"{', '.join(part(name) for name in ('better', 'worse', 'within noise'))}")


def log_change_intervals(tracking_uri: str, run_id: str, split: str, intervals: Mapping[str, Interval]) -> None:
    """Each task's interval as `<split>_change_low/<task>` and `<split>_change_high/<task>`."""
    _log_metrics(tracking_uri, run_id, {f"{split}_change_{end}/{task}": bound for task, bounds in intervals.items()
                                        for end, bound in zip(("low", "high"), bounds)})


def cut_answers_line(evaluation: ModelEvaluation) -> str | None:
    """A line naming the tasks where `evaluation`'s answers reached the generation limit before they ended
    (they are scored as they are, so a long reference can never be matched); None when there are none."""
    cut = [f"{task} {score.cut}/{score.count}" for task, score in evaluation.generative.items() if score.cut]
    if not cut:
        return None
    return (f"{evaluation.label}: answers cut at eval.max_new_tokens before they ended: {', '.join(cut)} "
            "(scored as cut; raise eval.max_new_tokens if the references are longer)")


def improved_tasks(before: ModelEvaluation, after: ModelEvaluation) -> list[str]:
    """The tasks on which `after` scores strictly higher than `before`."""
    old = before.headline()
    return [task for task, score in after.headline().items() if task in old and score.value > old[task].value]


def _catalog_values(evaluation: ModelEvaluation, tasks: Sequence[str]) -> dict[str, float]:
    """`TASK metric` -> value of a model or baseline on the catalog tasks: its full-catalog ranking (Recall@10,
    NDCG@10, MRR@k) where it ranked one, and the task's own generative score (SR's recall@1 on the options)."""
    values = {}
    for task in tasks:
        ranking = evaluation.retrieval.get(CATALOG, {}).get(task)
        if ranking is not None:
            values.update({f"{task} {name}": value for name, value in ranking.extra.items()})
            values[f"{task} {ranking.metric}"] = ranking.value
        chosen = evaluation.generative.get(task)
        if chosen is not None:
            values[f"{task} {metric_name(chosen)}"] = chosen.value
    return values


def below_baselines(evaluation: ModelEvaluation, baselines: Sequence[ModelEvaluation]) -> list[str]:
    """One line per baseline that scores higher than the model on some metric both have, naming them."""
    tasks = _catalog_tasks(baselines)
    mine, lines = _catalog_values(evaluation, tasks), []
    for baseline in baselines:
        theirs = _catalog_values(baseline, tasks)
        worse = [f"{name} ({mine[name]:.4f} < {theirs[name]:.4f})" for name in mine
                 if name in theirs and mine[name] < theirs[name]]
        if worse:
            lines.append(f"{evaluation.label} is below {baseline.label} on {', '.join(worse)}")
    return lines


def _catalog_tasks(baselines: Sequence[ModelEvaluation]) -> list[str]:
    """The tasks the baselines scored."""
    return list(dict.fromkeys(task for b in baselines for task in (*b.retrieval.get(CATALOG, {}), *b.generative)))


def catalog_report(evaluations: Sequence[ModelEvaluation], baselines: Sequence[ModelEvaluation]) -> str:
    """The full-catalog table (a row per model, then per baseline; `-` where a row has no such number) and,
    per model, the baselines it is below and on what (or that it is below none)."""
    tasks = _catalog_tasks(baselines)
    rows = [*evaluations, *baselines]
    values = [_catalog_values(row, tasks) for row in rows]
    columns = list(dict.fromkeys(name for row in values[len(evaluations):] + values for name in row))
    protocol = baselines[0].retrieval[CATALOG][tasks[0]].protocol
    table = format_table(["model", *columns], [[row.label, *(f"{v[c]:.4f}" if c in v else "-" for c in columns)]
                                               for row, v in zip(rows, values)])
    verdicts = []
    for evaluation in evaluations:
        verdicts += below_baselines(evaluation, baselines) or \
            [f"{evaluation.label} is below no baseline on any metric they share"]
    title = f"{protocol[:1].upper()}{protocol[1:]}: the models beside the baselines"
    return f"{title}\n{table}\n" + "\n".join(verdicts)


def headline_metrics(evaluation: ModelEvaluation, prefix: str) -> dict[str, float]:
    """`<prefix>/<task>` (each task's headline metric) and `<prefix>/<kind>_avg` of one model."""
    metrics = {f"{prefix}/{task}": score.value for task, score in evaluation.headline().items()}
    metrics.update({f"{prefix}/{kind}_avg": value for kind, value in evaluation.averages().items()})
    return metrics


def evaluation_metrics(evaluation: ModelEvaluation, prefix: str) -> dict[str, float]:
    """MLflow metrics of one model: `<prefix>/<task>` (headline), `<prefix>_full/<task>` (full pool when
    the headline is sampled), `<prefix>_invalid/<task>` and `<prefix>_cut/<task>` (answers cut at the
    generation limit), `<prefix>/<kind>_avg`."""
    metrics = headline_metrics(evaluation, prefix)
    for task, score in evaluation.generative.items():
        metrics.update({f"{prefix}_invalid/{task}": float(score.invalid), f"{prefix}_cut/{task}": float(score.cut)})
    if "sampled" in evaluation.retrieval and "full" in evaluation.retrieval:
        metrics.update({f"{prefix}_full/{t}": s.value for t, s in evaluation.retrieval["full"].items()})
    return {**metrics, **catalog_metrics(evaluation, prefix)}


def catalog_metrics(evaluation: ModelEvaluation, prefix: str) -> dict[str, float]:
    """`<prefix>_catalog/<task>` (MRR@k on the whole catalog) and `<prefix>_catalog/<task>_recall_at_10`,
    `..._ndcg_at_10` of a model or baseline."""
    metrics = {}
    for task, score in evaluation.retrieval.get(CATALOG, {}).items():
        metrics[f"{prefix}_{CATALOG}/{task}"] = score.value
        metrics.update({f"{prefix}_{CATALOG}/{task}_{name.replace('@', '_at_')}": value
                        for name, value in score.extra.items()})
    return metrics


def baseline_metrics(baseline: ModelEvaluation, prefix: str) -> dict[str, float]:
    """A baseline's catalog metrics and, under `<prefix>/<task>`, its generative scores (SR's option)."""
    return {**catalog_metrics(baseline, prefix), **{f"{prefix}/{t}": s.value for t, s in baseline.generative.items()}}


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


def log_evaluations(tracking_uri: str, run_id: str, evaluations: Mapping[str, ModelEvaluation],
                    baselines: Mapping[str, ModelEvaluation] | None = None) -> None:
    """Log {role: evaluation} (e.g. {"test_base": ..., "test": ...}) and {role: baseline} (e.g.
    {"test_popularity": ...}) to run `run_id`: metrics prefixed by the role, and the artifacts of the module
    doc."""
    from recfound.tracking.limits import MAX_TAG_LENGTH, truncate, valid_key
    from recfound.tracking.runs import log_artifact_dir
    from recfound.tracking.store import client

    baselines = baselines or {}
    metrics = {}
    for role, evaluation in evaluations.items():
        metrics.update(evaluation_metrics(evaluation, valid_key(role)))
    for role, baseline in baselines.items():
        metrics.update(baseline_metrics(baseline, valid_key(role)))
    _log_metrics(tracking_uri, run_id, metrics)
    with tempfile.TemporaryDirectory() as folder:
        write_evaluation_files(Path(folder) / "evaluation", evaluations, baselines)
        log_artifact_dir(tracking_uri, run_id, Path(folder) / "evaluation", "evaluation")
    client(tracking_uri).log_table(run_id, _table_rows({**evaluations, **baselines}), "evaluation/table.json")
    below = [line for e in evaluations.values() for line in below_baselines(e, list(baselines.values()))]
    if below:
        client(tracking_uri).set_tag(run_id, "below_baselines", truncate("; ".join(below), MAX_TAG_LENGTH))


def answers_file(index: int, role: str) -> str:
    """A safe file name for a model's answers ('models:/a/1' -> '1-models_a_1.jsonl')."""
    return f"{index}-{re.sub(r'[^A-Za-z0-9._-]+', '_', role).strip('_') or 'model'}.jsonl"


def evaluation_tables(evaluations: Sequence[ModelEvaluation], baselines: Sequence[ModelEvaluation] = ()) -> str:
    """Table 2 and 3 of the models, a line per model whose answers were cut at the generation limit and,
    with baselines, the full-catalog table."""
    tables = "\n\n".join([comparison_tables(evaluations), *filter(None, map(cut_answers_line, evaluations))])
    return f"{tables}\n\n{catalog_report(evaluations, baselines)}" if baselines else tables


def write_evaluation_files(folder: Path, evaluations: Mapping[str, ModelEvaluation],
                           baselines: Mapping[str, ModelEvaluation] | None = None) -> None:
    """scores.json, tables.txt, answers/<n>-<role>.jsonl of {role: evaluation} and, with baselines,
    baselines.json of {role: baseline} into `folder` (which appears whole or not at all; an earlier evaluation
    folder there is replaced)."""
    from recfound.data.atomic import atomic_folder

    with atomic_folder(folder, SCORES_FILE) as staging:
        scores = {role: e.to_dict() for role, e in evaluations.items()}
        (staging / SCORES_FILE).write_text(json.dumps(scores, indent=1), encoding="utf-8")
        if baselines:
            (staging / BASELINES_FILE).write_text(json.dumps({r: b.to_dict() for r, b in baselines.items()}, indent=1),
                                                  encoding="utf-8")
        tables = evaluation_tables(list(evaluations.values()), list((baselines or {}).values()))
        (staging / "tables.txt").write_text(tables + "\n", encoding="utf-8")
        answers = staging / "answers"
        answers.mkdir()
        for index, (role, evaluation) in enumerate(evaluations.items()):
            lines = [json.dumps({"model": role, "task": task, "index": i, "answer": answer})
                     for task, task_answers in evaluation.answers.items() for i, answer in enumerate(task_answers)]
            (answers / answers_file(index, role)).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _table_rows(evaluations: Mapping[str, ModelEvaluation]) -> dict[str, list]:
    """Columns of one row per (model, task, protocol) for MLflow's table view."""
    rows: dict[str, list] = {"model": [], "role": [], "task": [], "metric": [], "protocol": [], "scoring": [],
                             "value": [], "invalid": [], "cut": [], "count": []}
    for role, evaluation in evaluations.items():
        scores: list[TaskScore] = list(evaluation.generative.values())
        scores += [s for group in evaluation.retrieval.values() for s in group.values()]
        for score in scores:
            for key, value in (("model", evaluation.label), ("role", role), ("task", score.task),
                               ("metric", score.metric), ("protocol", score.protocol or ""),
                               ("scoring", score.scoring), ("value", score.value),
                               ("invalid", score.invalid), ("cut", score.cut), ("count", score.count)):
                rows[key].append(value)
    return rows


def read_logged_evaluations(tracking_uri: str, run: str) -> dict[str, ModelEvaluation]:
    """{role: evaluation} logged to an MLflow run, given its id or its name (the latest run of that name)."""
    import mlflow

    from recfound.tracking.store import check_store_to_read, client

    check_store_to_read(tracking_uri)  # reading creates no store, and waits for no silent server
    mlflow_client = client(tracking_uri)
    run_id = _run_id(mlflow_client, run, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="recfound-compare-") as folder:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=SCORES_ARTIFACT,
                                                       tracking_uri=tracking_uri, dst_path=folder)
        except Exception as err:  # MLflow raises several types for a missing artifact
            raise FileNotFoundError(f"run {run!r} ({run_id}) has no {SCORES_ARTIFACT}: was it evaluated?") from err
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {role: ModelEvaluation.from_dict(item) for role, item in data.items()}


def _run_id(mlflow_client, run: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    from recfound.tracking.store import filter_value

    try:
        return mlflow_client.get_run(run).info.run_id
    except MlflowException:
        pass
    missing = KeyError(f"no MLflow run with id or name {run!r} in {without_password(tracking_uri)}")
    quoted = filter_value(run)
    if quoted is None:  # both quotes: MLflow's filter language cannot say the name
        raise missing
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    found = mlflow_client.search_runs(experiments, filter_string=f"attributes.run_name = {quoted}",
                                      order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        raise missing
    return found[0].info.run_id
