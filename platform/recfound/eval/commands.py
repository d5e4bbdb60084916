"""`recfound eval run` and `recfound eval compare`: evaluate any models side by side, compare logged runs.

A model is named by one of:
- `RUN_DIR` or `RUN_DIR:init|final|merged`: a training run folder's adapter (default merged);
- `FILE.safetensors`: an adapter file inside a run folder (its config.yaml says how to rebuild it);
- `models:/NAME/VERSION` (or `models:/NAME/ALIAS`, `models:/NAME/latest`): a registered model version;
- `base:SPEC`: the bare backbone zero-shot (a preset such as `tiny`, `smollm2`, a HF folder or GGUF file),
  with `--tokenizer`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from recfound import storage
from recfound.data.atomic import check_replaceable
from recfound.config import EvalSection
from recfound.error_chain import first_line
from recfound.eval.catalog import load_catalog
from recfound.eval.data import load_split
from recfound.eval.job import make_scorer, run_baselines
from recfound.eval.report import (SCORES_FILE, evaluation_tables, log_evaluations, read_logged_evaluations,
                                  write_evaluation_files)
from recfound.eval.runner import ModelEvaluation, evaluate_model
from recfound.eval.source import RUN_MODELS, ModelSource, run_config, run_serving, run_tokenizer
from recfound.redact import without_password
from recfound.run_layout import ADAPTER_FILE, RunLayout
from recfound.tracking.pyfunc import ServingConfig

REGISTERED = "models:/"
BASE = "base:"
EVAL_EXPERIMENT = "recfound-eval"


def _run_folder_of(path: str) -> str:
    for folder in (storage.parent(path), storage.parent(storage.parent(path))):
        if storage.is_file(RunLayout(folder).config):
            return folder
    raise FileNotFoundError(f"{path}: no training run folder (with config.yaml) holds this adapter file")


def _split_model(spec: str) -> tuple[str, str]:
    """(location, which) of 'RUN_FOLDER[:init|final|merged]' or an adapter file (local paths or URIs)."""
    location, _, which = spec.rpartition(":")
    if not location or "/" in which or storage.exists(spec):
        return spec, ""
    if which not in (*RUN_MODELS, "final") and storage.is_dir(location):
        raise ValueError(f"{location}: no model {which!r}; choose init, final or merged")
    return location, which


def model_source(spec: str, tracking_uri: str, tokenizer: str | None, seed: int) -> ModelSource:
    """The `ModelSource` a command-line model name stands for (see module doc)."""
    if spec.startswith(REGISTERED):
        name, _, version = spec[len(REGISTERED):].partition("/")
        if not name or not version:
            raise ValueError(f"{spec}: expected models:/NAME/VERSION (or an alias instead of VERSION)")
        return ModelSource.from_registered(tracking_uri, name, version)
    if spec.startswith(BASE):
        if not spec[len(BASE):]:
            raise ValueError(f"{spec}: give the backbone after {BASE} (a preset such as tiny, smollm2, an HF folder "
                             "or a .gguf file)")
        if tokenizer is None:
            raise ValueError(f"{spec}: a bare backbone needs --tokenizer (a tokenizer folder, 'smollm2' or a .gguf)")
        from recfound.data.tokenizer import resolve_tokenizer

        serving = ServingConfig(backbone=spec[len(BASE):], backbone_seed=seed)
        return ModelSource.from_backbone(spec, serving, resolve_tokenizer(tokenizer))
    path, which = _split_model(spec)
    if storage.is_file(path):
        if not path.endswith(".safetensors"):
            raise ValueError(f"{path}: not an adapter file (a .safetensors file a run wrote); give one, a run folder, "
                             "RUN:init|final|merged or models:/NAME/VERSION")
        run_dir = _run_folder_of(path)
        layout = RunLayout(run_dir)
        config = run_config(layout)
        label = "/".join((storage.basename(run_dir), storage.normalize(path)[len(storage.normalize(run_dir)) + 1:]))
        return ModelSource.from_adapter_file(label, path, run_tokenizer(layout, config), run_serving(layout, config))
    if storage.is_dir(path):
        checkpoint_adapter = storage.join(path, ADAPTER_FILE)
        if not storage.is_file(RunLayout(path).config) and storage.is_file(checkpoint_adapter):
            raise FileNotFoundError(f"{path}: a checkpoint folder, not a run folder: give its adapter file "
                                    f"{checkpoint_adapter} (or the run folder above it)")
        return ModelSource.from_run(path, which or "merged")
    raise FileNotFoundError(f"{spec}: no such run folder or adapter file (nor models:/NAME/VERSION or base:SPEC)")


def distinctly_labelled(specs: Sequence[str], sources: Sequence[ModelSource]) -> list[ModelSource]:
    """The sources, each labelled by its spec as typed where two different models got the same label (two
    runs of one name, say); ValueError for one model given twice."""
    for i, (spec, source) in enumerate(zip(specs, sources)):
        for other_spec, other in zip(specs[:i], sources[:i]):
            if (source.adapter, source.serving, source.backbone_files) == \
                    (other.adapter, other.serving, other.backbone_files):
                raise ValueError(f"{other_spec} and {spec} are the same model (each model is evaluated once)")
    labels = [source.label for source in sources]
    return [replace(source, label=spec) if labels.count(source.label) > 1 else source
            for spec, source in zip(specs, sources)]


def _check_store(tracking_uri: str, artifact_root: str | None) -> None:
    """Open the MLflow store (and the evaluation experiment) a `--log` will write to, or say why it cannot."""
    from recfound.config import path_given_as_tracking_uri
    from recfound.tracking.store import ensure_experiment

    problem = path_given_as_tracking_uri(tracking_uri)
    if problem:
        raise ValueError(f"--log: {problem}")
    try:
        ensure_experiment(tracking_uri, EVAL_EXPERIMENT, artifact_root)
    except Exception as err:  # noqa: BLE001 - MLflow raises many kinds; each becomes the one line below
        raise ValueError(f"--log: cannot use the MLflow store {without_password(tracking_uri)} "
                         f"({first_line(err)})") from None


def run_evaluation(models: Sequence[str], data_root: storage.Location, options: EvalSection, tasks: list[str] | None,
                   tracking_uri: str, tokenizer: str | None = None, seed: int = 0, use_gpu: bool = False,
                   out: Path | None = None, log: bool = False, artifact_root: str | None = None
                   ) -> dict[str, ModelEvaluation]:
    """Evaluate every model on the same records and candidates (and, on a root built from logs, the whole
    catalog beside the baselines); print the tables; write them to `out` and/or log them to a new MLflow run
    of experiment `recfound-eval` (artifacts under `artifact_root` when the experiment is new and one is
    given). Returns {label: evaluation}."""
    from recfound.cluster import ray_session

    if out is not None:  # the places the results go, checked before the long part
        check_replaceable(Path(out), SCORES_FILE)
    sources = distinctly_labelled(models, [model_source(spec, tracking_uri, tokenizer, seed) for spec in models])
    if log:  # after the models: a mistyped one leaves no new store behind
        _check_store(tracking_uri, artifact_root)
    data = load_split(data_root, options.split, tasks, options.max_records)
    catalog = load_catalog(data_root, options.split, data)
    scorer = make_scorer(options.scorer)
    with ray_session(log_to_driver=True) if options.workers else nullcontext():
        evaluations = {s.label: evaluate_model(s, data, options, scorer, seed, use_gpu, catalog) for s in sources}
    baselines = run_baselines(catalog, options.k)
    print(evaluation_tables(list(evaluations.values()), list(baselines.values())))
    if out is not None:
        write_evaluation_files(out, evaluations, baselines)
        print(f"wrote {out / SCORES_FILE}, {out / 'tables.txt'} and the answers under {out / 'answers'}")
    if log:
        from recfound import tracking

        params = {"models": list(models), "data": str(data_root), "tasks": tasks or "all", "seed": seed,
                  **{f"eval.{k}": v for k, v in vars(options).items()}}
        run_id = tracking.start_run(tracking_uri, EVAL_EXPERIMENT, f"eval-{time.strftime('%Y%m%d-%H%M%S')}", params,
                                    artifact_root=artifact_root)
        status = "FAILED"
        try:
            log_evaluations(tracking_uri, run_id, evaluations, baselines)
            status = "FINISHED"
        finally:
            tracking.finish_run(tracking_uri, run_id, status)
        print(f"logged to MLflow run {run_id} (experiment {EVAL_EXPERIMENT}) at {without_password(tracking_uri)}")
    return evaluations


def compare_runs(runs: Sequence[str], tracking_uri: str) -> str:
    """The tables of every model evaluated in the given MLflow runs (ids or names), side by side."""
    evaluations = []
    for run in runs:
        for role, evaluation in read_logged_evaluations(tracking_uri, run).items():
            evaluation.label = f"{run}:{role}"
            evaluations.append(evaluation)
    return evaluation_tables(evaluations)

