"""A training job from start to end, as a flat list of stages:

    prepare data -> train -> plots -> merge -> evaluate -> register -> summary

`recfound train`, `jobs/train.py` and every sweep trial call `run_training`. The stages' work lives in the
library (data/, train/, merge/, eval/, tracking/); this module only orders them, in the run's folder
(`recfound.run_folder`: locked, local or on an object store) and its MLflow run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recfound import storage
from recfound.config import RunConfig, save_config
from recfound.job_report import TrainingReport, print_summary, summary_text
from recfound.redact import without_password
from recfound.run_folder import RunFolder
from recfound.run_layout import (ADAPTER_FILE, CONFIG_FILE, HISTORY_FILE, RATIO_PLOT, ROUTING_PLOT, SUMMARY_FILE,
                                 RunLayout)
from recfound.train.interrupt import RunInterrupted, interruption, stop_on_signals
from recfound.train.resume import Resume, plan_restart


def run_training(config: RunConfig, overwrite: bool = False, parent_run_id: str | None = None,
                 callbacks: Sequence[Any] = ()) -> TrainingReport:
    """Run the whole job (see module doc) on the Ray cluster of this process (or a private local one).

    `parent_run_id` nests the MLflow run under that run (a sweep's trials); `callbacks` are Ray Train
    callbacks of the TorchTrainer (e.g. Tune's `TuneReportCallback`, which forwards every checkpoint's
    report, validation losses included, to the trial)."""
    from recfound.cluster import require_token
    from recfound.train.engine import deepspeed_config

    started = time.perf_counter()
    print(f"== run config\n{config.to_yaml()}", flush=True)
    deepspeed_config(config.train)  # an unsupported setting fails here, not in every worker
    config.tracking_uri()  # a run folder in a bucket without a tracking server fails here, not after the data
    if os.environ.get("RAY_ADDRESS"):
        require_token()  # before the run folder is made: a job that cannot reach its cluster leaves nothing
    with stop_on_signals(), RunFolder(config.run.output_dir, config.run.name) as folder:
        resume = plan_restart(config, folder, overwrite)
        report = _run_stages(config, folder, parent_run_id, callbacks, resume)
    report.seconds = time.perf_counter() - started
    print_summary(report, config.eval.split)
    return report


def _run_stages(config: RunConfig, folder: RunFolder, parent_run_id: str | None, callbacks: Sequence[Any],
                resume: Resume | None) -> TrainingReport:
    from recfound import tracking
    from recfound.cluster import ray_session
    from recfound.data.prepare import prepare_backbone, prepare_corpus, prepare_tokenizer
    from recfound.train.launch import fit_run, kept_checkpoints
    from recfound.train.placement import check_feasible

    layout = RunLayout(folder.location)
    save_config(config, folder.path / CONFIG_FILE)
    folder.publish(CONFIG_FILE)
    root = prepare_corpus(config)
    tokenizer, tokenizer_location = prepare_tokenizer(config, root, layout, folder.path, resuming=resume is not None)
    backbone = prepare_backbone(config, root, tokenizer, layout, folder.path, resuming=resume is not None)
    # What trains, evaluates and is registered: the run's pre-trained backbone in place of the preset's name
    # (config.yaml and the MLflow params keep what was asked for).
    trained_on = config if backbone == config.model.backbone else config.with_overrides({"model.backbone": backbone})
    if config.eval.enabled:
        from recfound.eval.job import check_evaluation

        check_evaluation(config)  # a missing test split or scorer fails now, not after training
    with ray_session(log_to_driver=True):
        check_feasible(config.train)  # before any Ray work or MLflow run
        pools = _tokenized_pools(config, root, tokenizer_location)
        run_id, digest = _tracking_run(config, resume, parent_run_id, root, tokenizer, pools)
        folder.note(mlflow_run_id=run_id, data_hash=digest)
        tracking_uri = config.tracking_uri()
        try:
            history, checkpoints = fit_run(trained_on, layout, tokenizer_location, pools, run_id, tracking_uri,
                                           callbacks)
            report = TrainingReport(folder.path, layout.location, run_id, tracking_uri, history,
                                    folder.local_copy(storage.join(checkpoints[-1], ADAPTER_FILE)), None)
            initial = folder.local_copy(layout.init_adapter)  # written by a worker
            _plots(config, folder, history)
            _merge(config, folder, layout, checkpoints, report)
            _log_run_files(folder, layout, report, initial)
            _losses(report)
            if config.eval.enabled:
                _evaluate(trained_on, report, tokenizer, initial)
            _register(config, report, tokenizer, digest, backbone)
            _summary(config, folder, report)
            return report
        except BaseException as err:
            stopped = interruption(err)
            tracking.finish_run_quietly(tracking_uri, run_id, "FAILED" if stopped is None else "KILLED")
            if stopped is None:
                raise
            raise RunInterrupted(stopped.signum, f"training run {config.run.name!r} stopped by {stopped.signal_name}; "
                                                 f"{kept_checkpoints(layout)}; the same command resumes it") from None


# --- prepare data ---------------------------------------------------------------------------------


def _tokenized_pools(config: RunConfig, root: str, tokenizer: str) -> dict[str, dict[str, Any]]:
    """Every selected task's train and validation pool, read, validated and tokenized by Ray Data (whose
    tasks may run on any node: `tokenizer` is where they find it, a local folder or a URI)."""
    from recfound.data.cuts import cut_warnings
    from recfound.data.pipeline import load_pools
    from recfound.data.pool_cache import cache_folder
    from recfound.train.validation import check_validation_pools

    print("\n== tokenizing the train and validation splits with Ray Data", flush=True)
    started = time.perf_counter()
    cache = cache_folder()
    pools = {split: load_pools(root, split, tokenizer, config.token_limits(), tasks=config.task_names(), cache=cache)
             for split in ("train", "val")}
    kept = [ref for split in pools.values() for ref in split.values() if ref.from_cache]
    reused = f" ({len(kept)} of {sum(map(len, pools.values()))} task files tokenized before, read from {cache})" \
        if kept else ""
    print(f"{sum(len(p) for p in pools['train'].values()):,} train and "
          f"{sum(len(p) for p in pools['val'].values()):,} validation records in "
          f"{time.perf_counter() - started:.1f}s{reused}", flush=True)
    for line in cut_warnings(pools, config.token_limits()):
        print(line, flush=True)
    check_validation_pools(pools["val"], config.train.max_workers, root)
    return pools


def _tracking_run(config: RunConfig, resume: Resume | None, parent_run_id: str | None, root: str, tokenizer: Path,
                  pools: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(the MLflow run this process logs into, the data hash): the resumed run's, or a new one with the
    corpus logged as its dataset."""
    from recfound import tracking
    from recfound.data.prepare import data_hash

    tracking_uri = config.tracking_uri()
    digest = data_hash(pools, tokenizer)
    if resume is not None:
        resume.check_data(config.run.name, digest)
    run_id = _reopened_run(config, resume)
    if run_id is None:
        tags = {"data_hash": digest, "base_model": config.model.backbone, **tracking.run_tags(tracking_uri, parent_run_id)}
        run_id = tracking.start_run(tracking_uri, config.mlflow.experiment, config.run.name, run_params(config),
                                    tags=tags, artifact_root=config.artifact_root())
        profile = {}
        for split, group in pools.items():
            profile[f"{split}_records"] = sum(len(pool) for pool in group.values())
            profile[f"{split}_records_cut"] = sum(pool.cut.records for pool in group.values())
        tracking.log_dataset(tracking_uri, run_id, storage.basename(storage.normalize(root)), digest, root, "training",
                             {**profile, "tasks": len(pools["train"])})
    return run_id, digest


def run_params(config: RunConfig) -> dict[str, Any]:
    """The MLflow params of a run: `config.flat()` with data.root and run.output_dir absolute, so the
    run says where its data and outputs are whatever directory it was started from."""
    from recfound.tracking.store import absolute_location

    return {**config.flat(), "data.root": without_password(absolute_location(config.data.root)),
            "run.output_dir": without_password(absolute_location(config.run.output_dir))}


def _reopened_run(config: RunConfig, resume: Resume | None) -> str | None:
    """The MLflow run a resumed run logs on into (RUNNING again), if the store still has it."""
    from recfound import tracking

    if resume is None or resume.mlflow_run_id is None:
        return None
    if not tracking.reopen_run(config.tracking_uri(), resume.mlflow_run_id):
        print(f"note: the MLflow run {resume.mlflow_run_id} of the earlier process is gone; logging into a new one",
              flush=True)
        return None
    print(f"logging on into MLflow run {resume.mlflow_run_id}", flush=True)
    return resume.mlflow_run_id


# --- after training -------------------------------------------------------------------------------


def _plots(config: RunConfig, folder: RunFolder, history: dict) -> None:
    from recfound.sched.plot import plot_ratios

    print("\n== merging, plotting, logging and registering", flush=True)
    plot_ratios(history, folder.path / RATIO_PLOT, title=f"{config.run.name}: S2Sched sample ratios")
    storage.write_bytes(folder.path / HISTORY_FILE, json.dumps(history).encode())
    folder.publish(RATIO_PLOT)
    folder.publish(HISTORY_FILE)


def _merge(config: RunConfig, folder: RunFolder, layout: RunLayout, checkpoints: list[str],
           report: TrainingReport) -> None:
    """TIES over the checkpoints Ray Train registered, not whatever folders a crash left behind."""
    from recfound.merge import merge_adapter_files

    if not config.merge.enabled:
        return
    merged = checkpoints[-config.merge.last:]
    merge_adapter_files(layout.init_adapter, [storage.join(c, ADAPTER_FILE) for c in merged], layout.merged,
                        config.merge.density, config.merge.method)
    report.merged_adapter, report.merged_steps = folder.local_copy(layout.merged), len(merged)


def _log_run_files(folder: RunFolder, layout: RunLayout, report: TrainingReport, initial: Path) -> None:
    from recfound import tracking

    files = [folder.path / CONFIG_FILE, folder.path / RATIO_PLOT, folder.path / HISTORY_FILE, initial]
    routing = layout.file(ROUTING_PLOT)  # a worker's, when the adapter is TMoLE
    if storage.is_file(routing):
        files.append(folder.local_copy(routing))
    tracking.log_artifact_files(report.tracking_uri, report.run_id, files)
    tracking.log_artifact_files(report.tracking_uri, report.run_id, [report.final_adapter], artifact_path="adapter/final")
    if report.merged_adapter is not None:
        tracking.log_artifact_files(report.tracking_uri, report.run_id, [report.merged_adapter],
                                    artifact_path="adapter/merged")


def _losses(report: TrainingReport) -> None:
    """Each task's validation loss at the first and the last S2Sched point, and its final ratio."""
    for kind in report.history["kinds"].values():
        losses = kind["losses"] or [[float("nan")] * len(kind["tasks"])]  # every point skipped: no numbers
        for i, task in enumerate(kind["tasks"]):
            report.first_val_loss[task], report.last_val_loss[task] = losses[0][i], losses[-1][i]
            report.last_ratio[task] = kind["ratios"][-1][i]


def _evaluate(config: RunConfig, report: TrainingReport, tokenizer: Path, initial: Path) -> None:
    """Evaluate the trained (and the untrained) adapter on eval.split and log it to the run. A failure
    here is reported (summary, `evaluation_error` tag) but does not fail the trained run."""
    from recfound.eval.job import evaluate_training_run, roles
    from recfound.eval.report import log_change_intervals, log_evaluation_steps, log_evaluations
    from recfound.tracking.store import client

    print(f"\n== evaluating on the {config.eval.split} split", flush=True)
    trained_role, base_role = roles(config.eval.split)
    trained = report.merged_adapter or report.final_adapter
    try:
        report.evaluations, report.baselines, report.change_intervals = evaluate_training_run(
            config, tokenizer, trained, initial)
        log_evaluations(report.tracking_uri, report.run_id, report.evaluations, report.baselines)
        log_change_intervals(report.tracking_uri, report.run_id, config.eval.split, report.change_intervals)
        points = {0: report.evaluations.get(base_role), config.train.steps: report.evaluations[trained_role]}
        log_evaluation_steps(report.tracking_uri, report.run_id, f"{config.eval.split}_by_step",
                             {step: evaluation for step, evaluation in points.items() if evaluation is not None})
    except Exception as err:  # noqa: BLE001 - whatever broke, the training results stand
        report.evaluations, report.baselines, report.change_intervals = {}, {}, {}
        report.evaluation_error = f"{type(err).__name__}: {err}"
        print(f"warning: the evaluation failed: {report.evaluation_error}", flush=True)
        client(report.tracking_uri).set_tag(report.run_id, "evaluation_error", report.evaluation_error[:5000])
        return
    trained_scores = report.evaluations[trained_role]
    report.test_scores = {task: score.value for task, score in trained_scores.headline().items()}
    report.test_averages = trained_scores.averages()


def _register(config: RunConfig, report: TrainingReport, tokenizer: Path, digest: str, backbone: str) -> None:
    """The served model loads `backbone`: the run's pre-trained copy of a preset (carried inside the model, a
    few MB), or model.backbone; its version's base_model tag says what was asked for, as the run's tag does."""
    from recfound import tracking

    report.registered = tracking.log_and_register_adapter(
        report.tracking_uri, report.run_id, report.merged_adapter or report.final_adapter, tokenizer,
        backbone, config.run.seed, config.mlflow.register_as,
        tags={"data_hash": digest, "base_model": config.model.backbone},
        dtype=config.model.dtype, embedding=config.embedding_config(), limits=config.token_limits(),
        backbone_folder=None if backbone == config.model.backbone else backbone, tasks=config.task_names())


def _summary(config: RunConfig, folder: RunFolder, report: TrainingReport) -> None:
    """summary.txt, written last: a run folder with it is a finished run."""
    from recfound import tracking

    storage.write_bytes(folder.path / SUMMARY_FILE, (summary_text(report, config.eval.split) + "\n").encode())
    tracking.log_artifact_files(report.tracking_uri, report.run_id, [folder.publish(SUMMARY_FILE)])
    tracking.finish_run(report.tracking_uri, report.run_id, "FINISHED")
