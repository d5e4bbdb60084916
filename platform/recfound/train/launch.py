"""The training stage of a job: the S2Sched actor and the Ray Train run of the workers' loop, with the
checkpoints in the run's storage (a local folder or a bucket). `recfound.job` calls `fit_run`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from recfound import storage
from recfound.cluster import has_autoscaler
from recfound.config import RunConfig
from recfound.console import train_log_level, verbose
from recfound.run_layout import RunLayout
from recfound.tasks import Kind, get_task
from recfound.train.errors import TrainingError
from recfound.train.interrupt import abort_controller_on_signals, interruption, raise_on_signals
from recfound.train.loop import train_loop_per_worker
from recfound.train.placement import (is_placement_timeout, placement_error, placement_timeout, start_timeout,
                                      waiting_reported, worker_resources)


def schedule_spec(config: RunConfig, pools: dict[str, Any]) -> Any:
    """The S2Sched actor's spec: the two kinds' tasks, batch sizes and pool sizes, the run's settings."""
    from recfound.sched import ScheduleSpec
    from recfound.sched.policy import KindSpec

    batch = {Kind.EMBEDDING: config.train.embedding_batch, Kind.GENERATIVE: config.train.generative_batch}
    kinds = {}
    for kind in (Kind.EMBEDDING, Kind.GENERATIVE):
        tasks = [t for t in pools if get_task(t).kind is kind]
        kinds[kind.value] = KindSpec(tuple(tasks), batch[kind], tuple(len(pools[t]) for t in tasks))
    # The workers set the world size when they start (an elastic run's varies); the most is a placeholder.
    return ScheduleSpec(kinds, config.train.steps, config.train.max_workers, config.sched.eval_interval,
                        config.sched_config())


def _with_absolute_backbone(config: RunConfig) -> RunConfig:
    """Workers do not run in the driver's directory (see `portable_spec`)."""
    from recfound.model.backbone import portable_spec

    return config.with_overrides({"model.backbone": portable_spec(config.model.backbone)})


def _trainer(config: RunConfig, payload: dict, callbacks: Sequence[Any] = (),
             controller_failure_limit: int = -1) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig as RayRunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from recfound.train.failure_policy import PlacementAttemptsPerRestart, WorkersRunning

    class InterruptibleTrainer(TorchTrainer):
        """Our signal handler (`recfound.train.interrupt`) aborts the controller, in place of Ray's."""

        def _register_sigint_handler(self, controller: Any) -> None:  # Ray 2.60 (pinned)
            abort_controller_on_signals(controller)

        def _initialize_and_run_controller(self, **controller_init_kwargs: Any) -> Any:  # Ray 2.60 (pinned)
            controller_init_kwargs["failure_policy"] = PlacementAttemptsPerRestart(self.run_config.failure_config)
            controller_init_kwargs["callbacks"] = [*controller_init_kwargs["callbacks"], WorkersRunning()]
            return super()._initialize_and_run_controller(**controller_init_kwargs)

        def fit(self) -> Any:
            try:
                return super().fit()
            finally:
                raise_on_signals()  # the controller is gone: a later signal stops the driver itself

    train = config.train
    # Ray Train keeps the run's checkpoints and its snapshot in the run folder, on the same storage.
    filesystem, storage_path = storage.resolve(config.run.output_dir)
    return InterruptibleTrainer(
        train_loop_per_worker, train_loop_config=payload,
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,  # (min, max): elastic
                                     resources_per_worker=worker_resources(train)),
        torch_config=TorchConfig(backend="nccl" if train.use_gpu else "gloo"),
        run_config=RayRunConfig(name=config.run.name, storage_path=storage_path,
                                storage_filesystem=filesystem if storage.is_remote(config.run.output_dir) else None,
                                failure_config=FailureConfig(max_failures=config.checkpoint.max_failures,
                                                             controller_failure_limit=controller_failure_limit),
                                checkpoint_config=CheckpointConfig(num_to_keep=config.checkpoint.keep),
                                logging_config=LoggingConfig(log_level=train_log_level()),
                                callbacks=list(callbacks)))


def fit_run(config: RunConfig, layout: RunLayout, tokenizer: str, pools: dict[str, dict[str, Any]], run_id: str,
            tracking_uri: str, callbacks: Sequence[Any] = ()) -> tuple[dict, list[str]]:
    """Start the scheduler actor (on this node, where its state can outlive any worker), run Ray Train;
    returns the scheduler history and the locations of the checkpoints Ray Train registered, oldest first.

    `tokenizer` is the tokenizer folder's location for the workers; `pools` the task pools by split
    (`recfound.data.streams.PoolRef`: the tables stay in Ray's object store)."""
    import ray
    import ray.train

    from recfound.cluster import on_this_node
    from recfound.sched import start_scheduler

    scheduler = start_scheduler(config.run.name, schedule_spec(config, pools["train"]),
                                scheduling_strategy=on_this_node())
    try:
        payload = {"config": _with_absolute_backbone(config), "tokenizer": tokenizer,  # pickled with its tasks
                   "run_dir": storage.normalize(layout.location),  # absolute: the workers run elsewhere
                   "run_id": run_id, "tracking_uri": tracking_uri,
                   "scheduler_state": scheduler.state(), "verbose": verbose(),
                   "pools": {split: {t: p.ref for t, p in group.items()} for split, group in pools.items()}}
        print(f"\n== training {config.train.steps} steps on {config.train.describe_workers()} "
              f"{'GPU' if config.train.use_gpu else 'CPU'} worker(s), ZeRO-{config.train.zero_stage}", flush=True)
        timeout_s = placement_timeout(config.train, autoscaled=has_autoscaler())
        try:
            with start_timeout(timeout_s) as controller_failure_limit, \
                    waiting_reported(config.train, timeout_s):
                result = _trainer(config, payload, callbacks, controller_failure_limit).fit()
            stopped = interruption()  # the handler aborted the controller, or a signal came as the run ended
            if stopped is not None:
                raise stopped
        except ray.train.TrainingFailedError as err:
            if timeout_s is not None and is_placement_timeout(err):
                raise placement_error(config.train, timeout_s) from None
            raise TrainingError(f"training run {config.run.name!r} failed; {kept_checkpoints(layout)}\n{err}") from err
        if storage.is_file(layout.stopped):
            raise TrainingError(f"training run {config.run.name!r} stopped: {storage.read_text(layout.stopped)}; "
                                f"{kept_checkpoints(layout)}")
        history = scheduler.history()
    finally:
        ray.kill(scheduler.handle)
    registered = sorted(result.best_checkpoints or [], key=lambda item: item[1]["step"])
    return history, [layout.checkpoint(PurePosixPath(checkpoint.path).name) for checkpoint, _ in registered]


def kept_checkpoints(layout: RunLayout) -> str:
    """'checkpoints kept in <run folder>: <names>' (what a failed or interrupted run leaves to resume from)."""
    kept = [storage.basename(folder) for folder in layout.checkpoint_folders()]
    return f"checkpoints kept in {layout.location}: {', '.join(kept) or 'none'}"
