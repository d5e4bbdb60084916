"""The Ray Train worker loop (`train_loop_per_worker`): one loop for GPUs and CPUs, ZeRO 1-3.

Per step t: fetch step t's per-task counts from the S2Sched actor, draw this rank's share of both
kinds' batches from the mixers, run the step (GradCache embedding branch + accumulated generative
branch, one `engine.step()`), and every `eval_interval` steps evaluate this rank's share of the
fixed validation sample and report it to the actor. Rank 0 logs to MLflow and prints progress;
every `checkpoint.every` steps all ranks write a checkpoint (see checkpoint.py) and report it.
After `train.max_bad_steps` non-finite steps in a row every rank (they all see the same global
loss) returns and rank 0 writes the reason to `stopped.txt` in the run folder: the driver turns
that into an error, without the restarts a raised error would cost (a replay diverges the same way).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from recfound.config import RunConfig
from recfound.console import quiet_worker, set_verbose, worker_line
from recfound import storage
from recfound.data.collate import collate_embedding, collate_generative
from recfound.data.mixer import TaskMixer
from recfound.data.pipeline import pools_by_kind
from recfound.data.streams import TokenPool
from recfound.data.tokenizer import load_tokenizer
from recfound.model.adapter import Adapter
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.state import INIT_KEY, read_adapter, save_adapter, tensors_fingerprint
from recfound.progress import Progress
from recfound.sched import SchedulerClient
from recfound.tasks import Kind, get_task
from recfound.train.checkpoint import LoopState, load_checkpoint, save_checkpoint, step_seed
from recfound.run_layout import ADAPTER_FILE, ROUTING_PLOT, RunLayout, checkpoint_name
from recfound.train.distributed import all_sum
from recfound.train.engine import accumulating, build_engine, full_trainable_state, gathered, set_learning_rate
from recfound.train.step import StepLosses, StepOptions, train_step
from recfound.train.validation import ValidationSet


def train_loop_per_worker(payload: Mapping[str, Any]) -> None:
    """Entry point of every Ray Train worker; `payload` comes from `recfound.train.launch`."""
    import ray.train

    set_verbose(payload.get("verbose", False))  # on an attached cluster the workers do not inherit it
    quiet_worker()
    context = ray.train.get_context()
    worker = Worker(payload["config"], payload, context.get_world_rank(), context.get_world_size())
    worker.resume(ray.train.get_checkpoint())
    worker.run()


class Worker:
    """One rank's model, engine, data and bookkeeping (see module doc)."""

    def __init__(self, config: RunConfig, payload: Mapping[str, Any], rank: int, world_size: int) -> None:
        import ray

        self.config, self.rank, self.world_size = config, rank, world_size
        self.layout = RunLayout(payload["run_dir"])  # a local path or a URI
        _, self.tokenizer = load_tokenizer(payload["tokenizer"])  # a local folder or a URI
        self.adapter = self._build_adapter()
        self.engine = build_engine(self.adapter, config.train)
        self.device = self.engine.device  # where DeepSpeed put the model (cuda:<local rank> on GPUs)
        pools = {split: {task: TokenPool(task, ray.get(ref)) for task, ref in refs.items()}
                 for split, refs in payload["pools"].items()}
        self.mixers = {kind: TaskMixer(group, seed=config.run.seed, rank=rank, world_size=world_size)
                       for kind, group in pools_by_kind(pools["train"]).items()}
        self.validation = ValidationSet(pools["val"], config.data.val_per_task, config.run.seed, rank, world_size,
                                        self.tokenizer.pad_id, self._tensors)
        self.options = StepOptions(config.embedding_config(), config.train.embedding_micro_batch,
                                   config.train.generative_micro_batch)
        self.scheduler = SchedulerClient.connect(config.run.name)
        self.logger = self._logger(payload) if rank == 0 else None
        self.initial_scheduler_state = payload["scheduler_state"]
        self.state = LoopState()
        self.last_validation: dict[str, float] = {}  # the latest point's means, reported with checkpoints
        self.trace: list[dict[str, Any]] = []  # train.trace_records: this rank's rows since the last checkpoint

    def _build_adapter(self) -> Adapter:
        model = self.config.model
        backbone = load_backbone(model.backbone, self.tokenizer, dtype=model.dtype,
                                 attn_implementation=model.attn_implementation, seed=self.config.run.seed)
        torch.manual_seed(self.config.run.seed)  # the same initial adapter on every rank and every run
        adapter = attach_adapter(backbone, self.config.adapter_config(), token_ids=[self.tokenizer.embed_id])
        if model.gradient_checkpointing:
            adapter.enable_checkpointing()
        return adapter.train()

    def _logger(self, payload: Mapping[str, Any]) -> Any:
        from recfound.tracking import StepLogger

        return StepLogger(payload["tracking_uri"], payload["run_id"]) if payload.get("run_id") else None

    def _tensors(self, arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {key: torch.from_numpy(value).to(self.device) for key, value in arrays.items()}

    def resume(self, checkpoint: Any) -> None:
        """Continue from `checkpoint` (Ray Train's latest) if there is one; else start over: record the
        initial adapter and reset the scheduler (a restart before the first checkpoint finds points in it)."""
        if checkpoint is None:
            tensors = full_trainable_state(self.engine, self.adapter)  # whole under ZeRO-3, fp32 under bf16
            # What the init file and every checkpoint name as the run's start (a merge checks it); in name order,
            # as the file holds the tensors.
            self.adapter.init_id = tensors_fingerprint(sorted(tensors.items()))
            if self.rank == 0:
                save_adapter(self.adapter, self.layout.init_adapter, tensors)
                self.scheduler.restore(self.initial_scheduler_state, self.world_size)
        else:
            with checkpoint.as_directory() as folder:
                self.state, scheduler_state = load_checkpoint(Path(folder), self.engine, self.adapter,
                                                              self.world_size)
                # Taken over, not recomputed: another host's CPU may draw the initial values differently.
                self.adapter.init_id = read_adapter(Path(folder) / ADAPTER_FILE, with_tensors=False)[0].get(INIT_KEY)
            for kind, mixer in self.mixers.items():
                mixer.load_state_dict(self.state.mixers[kind.value])
            if self.rank == 0:
                self.scheduler.restore(scheduler_state, self.world_size)
                worker_line(f"resumed from the checkpoint of step {self.state.step} on {self.world_size} worker(s)")
                if self.logger is not None:
                    self.logger.log(self.state.step, {"resumed_from_step": float(self.state.step)})
        _barrier()  # nobody asks the scheduler for counts before it is restored

    def run(self) -> None:
        try:
            self._run_steps()
        finally:
            if self.logger is not None:
                self.logger.flush()

    def _run_steps(self) -> None:
        train = self.config.train
        samples = train.embedding_batch + train.generative_batch
        bar = Progress(train.steps, "train step", unit="samples", interval=0,
                       already_done=self.state.step) if self.rank == 0 else None
        for step in range(self.state.step + 1, train.steps + 1):
            started = time.perf_counter()
            metrics = self._train(step)
            stopped = self._count_bad_step(step, metrics["loss/total"])
            validated = step % self.config.sched.eval_interval == 0 and not stopped
            if validated:
                metrics.update(self._validate(step))
                self.last_validation = _validation_means(metrics)
            self.state.step = step
            seconds = time.perf_counter() - started
            metrics.update(step_time_s=seconds, samples_per_s=samples / max(seconds, 1e-9))
            if self.logger is not None and (validated or stopped or step % train.log_every == 0):
                self.logger.log(step, metrics)
            if bar is not None:
                bar.update(1, samples, _note(metrics))
            if stopped:
                self._stop(stopped)
                return
            if step % self.config.checkpoint.every == 0 or step == train.steps:
                self._checkpoint(metrics)
        self._finish()

    def _train(self, step: int) -> dict[str, float]:
        torch.manual_seed(step_seed(self.config.run.seed, step, self.rank))
        published = self.scheduler.counts(step)
        batches, drawn, shares = {}, {}, []
        for kind, mixer in self.mixers.items():
            share = mixer.next_step(published["counts"][kind.value])
            collate = collate_embedding if kind is Kind.EMBEDDING else collate_generative
            batches[kind] = self._tensors(collate(share.rows, self.tokenizer.pad_id))
            drawn.update(share.counts)
            shares.append(share)
        if self.config.train.trace_records:
            self.trace.append({"step": step, "rows": {task: indices.tolist() for share in shares
                                                       for task, indices in share.indices.items()}})
        with accumulating(self.engine):
            losses = train_step(self.adapter, batches[Kind.EMBEDDING], batches[Kind.GENERATIVE], self.options,
                                lambda loss: self.engine.backward(loss, scale_wrt_gas=False))
        lr = set_learning_rate(self.engine, self.config.train, step)
        self.engine.step()
        return {**_step_metrics(losses, published, lr), **self._records(drawn)}

    def _records(self, drawn: dict[str, int]) -> dict[str, float]:
        """`records/<task>`: the records of each task all ranks together trained on this step."""
        tasks = list(drawn)
        totals = all_sum(torch.tensor([drawn[t] for t in tasks], dtype=torch.long, device=self.device))
        return {f"records/{t}": float(n) for t, n in zip(tasks, totals.tolist())}

    def _count_bad_step(self, step: int, loss: float) -> str | None:
        """Count a step whose loss was not finite or whose update ZeRO skipped; the reason to stop, if any."""
        applied = self.engine.was_step_applied()
        if math.isfinite(loss) and applied:
            self.state.bad_in_a_row = 0
            return None
        self.state.bad_steps += 1
        self.state.bad_in_a_row += 1
        if self.rank == 0:
            what = "the update was skipped" if not applied else "the update was applied (its gradients were finite)"
            worker_line(f"step {step}: non-finite loss or gradient (loss {loss}); {what} "
                        f"({self.state.bad_in_a_row} in a row, {self.state.bad_steps} in all)")
        if self.state.bad_in_a_row < self.config.train.max_bad_steps:
            return None
        return (f"{self.state.bad_in_a_row} steps in a row up to step {step} had a non-finite loss or gradient "
                f"(train.max_bad_steps={self.config.train.max_bad_steps}); lower train.lr or check the data")

    def _stop(self, reason: str) -> None:
        if self.rank == 0:
            storage.write_bytes(self.layout.stopped, reason.encode())
        _barrier()

    def _validate(self, step: int) -> dict[str, float]:
        sums, counts = self.validation.losses(self.adapter, self.options.embedding, self.options.embedding_micro_batch,
                                              self.options.generative_micro_batch)
        self.scheduler.report(step, self.rank, sums, counts)
        tasks = list(sums)
        totals = all_sum(torch.tensor([[sums[t] for t in tasks], [counts[t] for t in tasks]],
                                      dtype=torch.float64, device=self.device))
        return {f"val_loss/{t}": (totals[0, i] / totals[1, i]).item() for i, t in enumerate(tasks)}

    def _checkpoint(self, metrics: dict[str, float]) -> None:
        import ray.train

        _barrier()  # every rank's validation report is in: the scheduler state below is complete
        if self.logger is not None:
            self.logger.flush()  # a resumed run re-logs only the steps after this checkpoint
        if self.trace:
            lines = "".join(json.dumps(entry) + "\n" for entry in self.trace)
            storage.write_bytes(self.layout.record_trace(self.rank, self.trace[0]["step"], self.state.step),
                                lines.encode())
            self.trace = []
        self.state.mixers = {kind.value: mixer.state_dict() for kind, mixer in self.mixers.items()}
        scheduler_state = self.scheduler.state() if self.rank == 0 else None
        with tempfile.TemporaryDirectory(prefix="recfound-ckpt-") as folder:
            save_checkpoint(Path(folder), self.engine, self.adapter, self.state, scheduler_state, self.rank,
                            self.world_size)
            ray.train.report({"step": self.state.step, "loss/total": metrics["loss/total"], **self.last_validation},
                             checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=checkpoint_name(self.state.step))

    def _finish(self) -> None:
        if self.config.adapter_config().mode != "tmole":
            return
        from recfound.model.routing import plot_routing_similarity, routing_report

        # Every rank computes the report: under ZeRO-3 the gather and the routers' forwards are collectives.
        with gathered(self.engine, self.adapter):
            report = routing_report(self.adapter)
        if self.rank == 0:
            title = f"{self.config.run.name}: routing of the adapter after step {self.state.step}"
            plot_routing_similarity(report, self.layout.file(ROUTING_PLOT), title=title)


def _step_metrics(losses: StepLosses, published: Mapping[str, Any], lr: float) -> dict[str, float]:
    metrics = {"loss/embedding": losses.embedding, "loss/generative": losses.generative, "loss/total": losses.total,
               "lr": lr}
    metrics.update({f"train_loss/{task}": value for task, value in losses.tasks.items() if not math.isnan(value)})
    for ratios in published["ratios"].values():
        metrics.update({f"ratio/{task}": value for task, value in ratios.items()})
    return metrics


def _validation_means(metrics: Mapping[str, float]) -> dict[str, float]:
    """`val_loss/mean` over every task and `val_loss/<kind>` over each kind's tasks, of one validation point
    (what a Tune trial reports for ASHA and the search to compare)."""
    losses = {key.split("/", 1)[1]: value for key, value in metrics.items() if key.startswith("val_loss/")}
    means = {"val_loss/mean": float(np.mean(list(losses.values())))}
    for kind in Kind:
        values = [value for task, value in losses.items() if get_task(task).kind is kind]
        if values:
            means[f"val_loss/{kind.value}"] = float(np.mean(values))
    return means


def _note(metrics: Mapping[str, float]) -> str:
    return f"loss {metrics['loss/total']:.3f} (embedding {metrics['loss/embedding']:.3f}, " \
           f"generative {metrics['loss/generative']:.3f})"


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
