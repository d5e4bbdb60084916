"""The driver of a training job: data, tracking, the scheduler actor, the Ray Train run, then merge,
plots, registry and the summary table. `recfound train` and `jobs/train.py` call `run_training`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfound.config import RunConfig, save_config
from recfound.console import train_log_level, verbose
from recfound.data.pipeline import load_pools
from recfound.data.streams import TokenPool
from recfound.merge.files import ADAPTER_FILE, INIT_FILE, MERGED_FILE
from recfound.progress import format_table
from recfound.redact import without_password
from recfound.run_folder import RunFolder
from recfound.tasks import Kind, get_task
from recfound.train.errors import TrainingError
from recfound.train.interrupt import (RunInterrupted, abort_controller_on_signals, interruption, raise_on_signals,
                                      stop_on_signals)
from recfound.train.loop import ROUTING_PLOT, train_loop_per_worker
from recfound.train.resume import STOPPED_FILE, SUMMARY_FILE, Resume, find_checkpoint_folders, plan_restart
from recfound.train.validation import check_validation_pools
from recfound.train.placement import (check_feasible, has_autoscaler, is_placement_timeout, placement_error,
                                      placement_timeout, start_timeout, worker_resources)

RATIO_PLOT = "ratios.png"
HISTORY_FILE = "scheduler_history.json"


@dataclass
class TrainingReport:
    """What a finished run produced (paths, the MLflow run, the registered version, per-task losses)."""

    run_dir: Path
    run_id: str | None
    tracking_uri: str
    history: dict[str, Any]
    final_adapter: Path
    merged_adapter: Path | None
    registered: Any = None
    first_val_loss: dict[str, float] = field(default_factory=dict)
    last_val_loss: dict[str, float] = field(default_factory=dict)
    last_ratio: dict[str, float] = field(default_factory=dict)
    merged_steps: int = 0
    seconds: float = 0.0
    evaluations: dict[str, Any] = field(default_factory=dict)  # role ("test", "test_base") -> ModelEvaluation
    evaluation_error: str | None = None  # why the evaluation after training failed (the run itself did not)
    test_scores: dict[str, float] = field(default_factory=dict)  # task -> the trained model's headline metric
    test_averages: dict[str, float] = field(default_factory=dict)  # kind -> mean of test_scores over its tasks

    def table(self) -> str:
        """Per task: kind, the validation loss at the first and the last point, the change, the final ratio."""
        rows = [[task, get_task(task).kind.value, self.first_val_loss[task], self.last_val_loss[task],
                 f"{100 * (self.last_val_loss[task] / self.first_val_loss[task] - 1):+.1f}%", self.last_ratio[task]]
                for task in self.last_val_loss]
        return format_table(["task", "kind", "val loss (first)", "val loss (last)", "change", "final ratio"], rows)


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def prepare_data(config: RunConfig, resuming: bool = False) -> tuple[Path, Path]:
    """(data root, tokenizer folder): the corpus is generated when asked for and absent; a 'corpus'
    tokenizer is trained on it into the run folder (a resumed run keeps the one it trained with)."""
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.synth import synthesize
    from recfound.data.tokenizer import build_corpus_tokenizer, resolve_tokenizer

    root = Path(config.data.root)
    if not (root / "train").is_dir():
        if config.data.synth_scale is None:
            raise FileNotFoundError(f"data.root {root}: no train/ folder (set data.synth_scale to generate a corpus)")
        started = _stage(f"generating the {config.data.synth_scale} corpus (seed {config.run.seed}) into {root}")
        synthesize(root, config.run.seed, config.data.synth_scale)
        print(f"done in {time.perf_counter() - started:.1f}s")
    if config.data.tokenizer != "corpus":
        return root, resolve_tokenizer(config.data.tokenizer)
    folder = config.run_dir() / "tokenizer"
    if resuming and (folder / "tokenizer.json").is_file():
        return root, folder
    build_corpus_tokenizer(corpus_texts(root), folder, vocab_size=config.data.corpus_vocab)
    return root, folder


def data_hash(pools: dict[str, dict[str, TokenPool]], tokenizer: Path) -> str:
    """A short hash of the tokenized train and validation records (and the tokenizer) a run used."""
    digest = hashlib.sha256()
    for split in sorted(pools):
        for task in sorted(pools[split]):
            digest.update(f"{split}/{task}:{pools[split][task].fingerprint};".encode())
    for item in sorted(Path(tokenizer).glob("*.json")):
        digest.update(item.read_bytes())
    return digest.hexdigest()[:16]


def schedule_spec(config: RunConfig, pools: dict[str, TokenPool]) -> Any:
    """The S2Sched actor's spec: the two kinds' tasks, batch sizes and pool sizes, the run's settings."""
    from recfound.sched import ScheduleSpec
    from recfound.sched.policy import KindSpec

    batch = {Kind.EMBEDDING: config.train.embedding_batch, Kind.GENERATIVE: config.train.generative_batch}
    kinds = {}
    for kind in (Kind.EMBEDDING, Kind.GENERATIVE):
        tasks = [t for t in pools if get_task(t).kind is kind]
        kinds[kind.value] = KindSpec(tuple(tasks), batch[kind], tuple(len(pools[t]) for t in tasks))
    return ScheduleSpec(kinds, config.train.steps, config.train.num_workers, config.sched.eval_interval,
                        config.sched_config())


def _with_absolute_backbone(config: RunConfig) -> RunConfig:
    """Workers do not run in the driver's directory (see `portable_spec`)."""
    from recfound.model.backbone import portable_spec

    return config.with_overrides({"model.backbone": portable_spec(config.model.backbone)})


def run_params(config: RunConfig) -> dict[str, Any]:
    """The MLflow params of a run: `config.flat()` with data.root and run.output_dir absolute, so the
    run says where its data and outputs are whatever directory it was started from."""
    from recfound.tracking.store import absolute_location

    return {**config.flat(), "data.root": without_password(absolute_location(config.data.root)),
            "run.output_dir": without_password(absolute_location(config.run.output_dir))}


def log_corpus(tracking_uri: str, run_id: str, root: Path, digest: str,
               pools: dict[str, dict[str, TokenPool]]) -> None:
    """The corpus as the run's training dataset input: named after its folder, `data_hash` as the
    digest, the folder as the source, the record counts per split as the profile."""
    from recfound import tracking

    profile = {f"{split}_records": sum(len(pool) for pool in group.values()) for split, group in pools.items()}
    tracking.log_dataset(tracking_uri, run_id, Path(root).resolve().name, digest, root, "training",
                         {**profile, "tasks": len(pools["train"])})


def _trainer(config: RunConfig, payload: dict, callbacks: Sequence[Any] = (),
             controller_failure_limit: int = -1) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    class InterruptibleTrainer(TorchTrainer):
        """Our signal handler (`recfound.train.interrupt`) aborts the controller, in place of Ray's."""

        def _register_sigint_handler(self, controller: Any) -> None:  # Ray 2.60 (pinned)
            abort_controller_on_signals(controller)

        def fit(self) -> Any:
            try:
                return super().fit()
            finally:
                raise_on_signals()  # the controller is gone: a later signal stops the driver itself

    train = config.train
    return InterruptibleTrainer(
        train_loop_per_worker, train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker=worker_resources(train)),
        torch_config=TorchConfig(backend="nccl" if train.use_gpu else "gloo"),
        run_config=RayRunConfig(name=config.run.name, storage_path=str(Path(config.run.output_dir).resolve()),
                                failure_config=FailureConfig(max_failures=config.checkpoint.max_failures,
                                                             controller_failure_limit=controller_failure_limit),
                                checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep),
                                logging_config=LoggingConfig(log_level=train_log_level()),
                                callbacks=list(callbacks)))


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
    if os.environ.get("RAY_ADDRESS"):
        require_token()  # before the run folder is made: a job that cannot reach its cluster leaves nothing
    with stop_on_signals(), RunFolder(config.run.output_dir, config.run.name) as folder:
        resume = plan_restart(config, folder, overwrite)
        report = _run_in_folder(config, folder, parent_run_id, callbacks, resume)
    report.seconds = time.perf_counter() - started
    _print_summary(config, report)
    return report


def _run_in_folder(config: RunConfig, folder: RunFolder, parent_run_id: str | None,
                   callbacks: Sequence[Any], resume: Resume | None) -> TrainingReport:
    from recfound import tracking
    from recfound.cluster import ray_session

    run_dir = folder.path
    save_config(config, run_dir / "config.yaml")
    root, tokenizer = prepare_data(config, resuming=resume is not None)
    if config.eval.enabled:
        from recfound.eval.job import check_evaluation

        check_evaluation(config)  # a missing test split or scorer fails now, not after training
    with ray_session(log_to_driver=True):
        check_feasible(config.train)  # before any Ray work or MLflow run
        stage = _stage("tokenizing the train and validation splits with Ray Data")
        pools = {split: load_pools(root, split, str(tokenizer), config.token_limits(), tasks=config.task_names())
                 for split in ("train", "val")}
        print(f"{sum(len(p) for p in pools['train'].values()):,} train and "
              f"{sum(len(p) for p in pools['val'].values()):,} validation records in {time.perf_counter() - stage:.1f}s")
        check_validation_pools(pools["val"], config.train.num_workers, str(root))
        tracking_uri = config.tracking_uri()
        digest = data_hash(pools, tokenizer)
        if resume is not None:
            resume.check_data(config.run.name, digest)
        run_id = _reopened_run(config, resume)
        if run_id is None:
            tags = {"data_hash": digest, "base_model": config.model.backbone,
                    **tracking.run_tags(tracking_uri, parent_run_id)}
            run_id = tracking.start_run(tracking_uri, config.mlflow.experiment, config.run.name,
                                        run_params(config), tags=tags, artifact_root=config.artifact_root())
            log_corpus(tracking_uri, run_id, root, digest, pools)
        folder.note(mlflow_run_id=run_id, data_hash=digest)
        try:
            history, checkpoints = _train(config, run_dir, tokenizer, pools, run_id, tracking_uri, callbacks)
            return _finish(config, run_dir, tokenizer, run_id, tracking_uri, history, checkpoints, digest)
        except BaseException as err:
            stopped = interruption(err)
            tracking.finish_run_quietly(tracking_uri, run_id, "FAILED" if stopped is None else "KILLED")
            if stopped is None:
                raise
            raise RunInterrupted(stopped.signum, f"training run {config.run.name!r} stopped by {stopped.signal_name}; "
                                                 f"{_kept(run_dir)}; the same command resumes it") from None


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


def _train(config: RunConfig, run_dir: Path, tokenizer: Path, pools: dict, run_id: str,
           tracking_uri: str, callbacks: Sequence[Any] = ()) -> tuple[dict, list[Path]]:
    """Start the scheduler actor (on this node, where its state can outlive any worker), run Ray Train;
    returns the scheduler history and the checkpoint folders Ray Train registered, oldest first."""
    import ray
    import ray.train
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from recfound.sched import start_scheduler

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    scheduler = start_scheduler(config.run.name, schedule_spec(config, pools["train"]), scheduling_strategy=here)
    try:
        payload = {"config": _with_absolute_backbone(config).to_dict(), "tokenizer": str(Path(tokenizer).resolve()),
                   "run_dir": str(run_dir.resolve()), "run_id": run_id, "tracking_uri": tracking_uri,
                   "scheduler_state": scheduler.state(), "verbose": verbose(),
                   "pools": {split: {t: ray.put(p.table) for t, p in group.items()} for split, group in pools.items()}}
        _stage(f"training {config.train.steps} steps on {config.train.num_workers} "
               f"{'GPU' if config.train.use_gpu else 'CPU'} worker(s), ZeRO-{config.train.zero_stage}")
        timeout_s = placement_timeout(config.train, autoscaled=has_autoscaler())
        try:
            with start_timeout(timeout_s) as controller_failure_limit:
                result = _trainer(config, payload, callbacks, controller_failure_limit).fit()
            stopped = interruption()  # the handler aborted the controller, or a signal came as the run ended
            if stopped is not None:
                raise stopped
        except ray.train.TrainingFailedError as err:
            if timeout_s is not None and is_placement_timeout(err):
                raise placement_error(config.train, timeout_s) from None
            raise TrainingError(f"training run {config.run.name!r} failed; {_kept(run_dir)}\n{err}") from err
        stopped = run_dir / STOPPED_FILE
        if stopped.is_file():
            raise TrainingError(f"training run {config.run.name!r} stopped: {stopped.read_text()}; {_kept(run_dir)}")
        history = scheduler.history()
    finally:
        ray.kill(scheduler.handle)
    registered = sorted(result.best_checkpoints or [], key=lambda item: item[1]["step"])
    return history, [Path(checkpoint.path) for checkpoint, _ in registered]


def _kept(run_dir: Path) -> str:
    kept = [p.name for p in find_checkpoint_folders(run_dir)]
    return f"checkpoints kept in {run_dir}: {', '.join(kept) or 'none'}"


def _finish(config: RunConfig, run_dir: Path, tokenizer: Path, run_id: str, tracking_uri: str,
            history: dict, checkpoints: list[Path], digest: str) -> TrainingReport:
    from recfound import tracking
    from recfound.data.atomic import atomic_write_bytes
    from recfound.merge import merge_adapter_files
    from recfound.sched.plot import plot_ratios

    _stage("merging, plotting, logging and registering")
    final = checkpoints[-1] / ADAPTER_FILE
    merged = None
    if config.merge.enabled:  # the checkpoints Ray Train registered, not whatever folders a crash left behind
        merged = merge_adapter_files(run_dir / INIT_FILE, [c / ADAPTER_FILE for c in checkpoints[-config.merge.last:]],
                                     run_dir / MERGED_FILE, config.merge.density, config.merge.trim_after_vote)
    plot_ratios(history, run_dir / RATIO_PLOT, title=f"{config.run.name}: S2Sched sample ratios")
    atomic_write_bytes(run_dir / HISTORY_FILE, json.dumps(history).encode())
    files = [run_dir / "config.yaml", run_dir / RATIO_PLOT, run_dir / HISTORY_FILE, run_dir / INIT_FILE]
    tracking.log_artifact_files(tracking_uri, run_id, [f for f in files + [run_dir / ROUTING_PLOT] if f.exists()])
    tracking.log_artifact_files(tracking_uri, run_id, [final], artifact_path="adapter/final")
    if merged is not None:
        tracking.log_artifact_files(tracking_uri, run_id, [merged], artifact_path="adapter/merged")
    registered = tracking.log_and_register_adapter(
        tracking_uri, run_id, merged or final, tokenizer, config.model.backbone, config.run.seed,
        config.mlflow.register_as, tags={"data_hash": digest}, dtype=config.model.dtype,
        embedding=config.embedding_config(), limits=config.token_limits())
    report = TrainingReport(run_dir, run_id, tracking_uri, history, final, merged, registered)
    report.merged_steps = len(checkpoints[-config.merge.last:]) if merged else 0
    for kind in history["kinds"].values():
        losses = kind["losses"] or [[float("nan")] * len(kind["tasks"])]  # every point skipped: no numbers
        for i, task in enumerate(kind["tasks"]):
            report.first_val_loss[task], report.last_val_loss[task] = losses[0][i], losses[-1][i]
            report.last_ratio[task] = kind["ratios"][-1][i]
    if config.eval.enabled:
        _evaluate(config, report, tokenizer, merged or final)
    atomic_write_bytes(run_dir / SUMMARY_FILE, (_summary_text(report, config.eval.split) + "\n").encode())
    tracking.log_artifact_files(tracking_uri, run_id, [run_dir / SUMMARY_FILE])
    tracking.finish_run(tracking_uri, run_id, "FINISHED")
    return report


def _evaluate(config: RunConfig, report: TrainingReport, tokenizer: Path, trained: Path) -> None:
    """Evaluate the trained (and the untrained) adapter on eval.split and log it to the run. A failure
    here is reported (summary, `evaluation_error` tag) but does not fail the trained, registered run."""
    from recfound.eval.job import evaluate_training_run, roles
    from recfound.eval.report import log_evaluation_steps, log_evaluations
    from recfound.tracking.store import client

    _stage(f"evaluating on the {config.eval.split} split")
    trained_role, base_role = roles(config.eval.split)
    try:
        report.evaluations = evaluate_training_run(config, tokenizer, trained, report.run_dir / INIT_FILE)
        log_evaluations(report.tracking_uri, report.run_id, report.evaluations)
        points = {0: report.evaluations.get(base_role), config.train.steps: report.evaluations[trained_role]}
        log_evaluation_steps(report.tracking_uri, report.run_id, f"{config.eval.split}_by_step",
                             {step: evaluation for step, evaluation in points.items() if evaluation is not None})
    except Exception as err:  # noqa: BLE001 - whatever broke, the training results stand
        report.evaluations, report.evaluation_error = {}, f"{type(err).__name__}: {err}"
        print(f"warning: the evaluation failed: {report.evaluation_error}", flush=True)
        client(report.tracking_uri).set_tag(report.run_id, "evaluation_error", report.evaluation_error[:5000])
        return
    trained_scores = report.evaluations[trained_role]
    report.test_scores = {task: score.value for task, score in trained_scores.headline().items()}
    report.test_averages = trained_scores.averages()


def _summary_text(report: TrainingReport, split: str) -> str:
    """The loss table and, when evaluated, the before/after table of the `split` metrics."""
    if report.evaluation_error:
        return f"{report.table()}\n\nevaluation failed: {report.evaluation_error}"
    if not report.evaluations:
        return report.table()
    from recfound.eval.job import roles
    from recfound.eval.report import before_after_table, improved_tasks

    trained_role, base_role = roles(split)
    before, after = report.evaluations.get(base_role), report.evaluations[trained_role]
    text = f"{report.table()}\n\n{before_after_table(before, after)}"
    if before is not None:
        text += f"\ntrained model better than the base on {len(improved_tasks(before, after))} of " \
                f"{len(after.headline())} tasks"
    return text


def _print_summary(config: RunConfig, report: TrainingReport) -> None:
    from recfound import tracking

    _stage("summary")
    print(_summary_text(report, config.eval.split))
    print(f"\nrun folder: {report.run_dir}  ({report.seconds:.0f}s)")
    print(f"final adapter: {report.final_adapter}")
    if report.merged_adapter:
        print(f"merged adapter (TIES over the last {report.merged_steps} checkpoints): {report.merged_adapter}")
    if report.registered is not None and report.registered.version is not None:
        print(f"registered: {report.registered.registered_uri}")
        print(f"serve it: {tracking.serve_command(report.tracking_uri, report.registered.registered_uri)}")
    print(f"MLflow run {report.run_id} at {without_password(report.tracking_uri)}")
    print(f"open the MLflow UI: {tracking.ui_command(report.tracking_uri)}")
