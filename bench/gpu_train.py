"""Parts (b) and (c) of the GPU suite: the training step that Ray Train workers run
(`recfound.train.step.train_step`: InfoNCE over the embedding batch through GradCache, response-token
cross-entropy over the generative batch, one optimizer step), here in one process with a plain torch
AdamW instead of DeepSpeed.

(b) trains on SmolLM2-135M's real weights and the tiny synthetic corpus; (c) on a random-init
Mistral-7B config with full-length random-token rows and activation checkpointing, where the model
FLOPs utilisation counts 6 x backbone parameters per token (recompute not counted).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from gpu_common import Device, TimeBox
from gpu_inputs import Workspace, local_pools, on_device, random_step
from gpu_model import loaded_backbone, parameter_count, random_backbone, with_adapter
from recfound.data.tokenizer import load_tokenizer
from recfound.model.adapter import Adapter
from recfound.model.objectives import EmbeddingConfig
from recfound.progress import Progress
from recfound.train.step import StepLosses, StepOptions, train_step
from tiny_step import mixed_batches, step_tokens

MAX_GRAD_NORM = 1.0  # as the training job's default (train.max_grad_norm)
PROFILE_ROWS = 30  # operators listed in a --profile table


@dataclass(frozen=True)
class TrainSizes:
    steps: int
    embedding_batch: int
    generative_batch: int
    embedding_micro_batch: int
    generative_micro_batch: int
    lr: float
    warmup_steps: int = 2  # not timed: kernel selection, allocator growth
    seq: int = 0  # random-token rows only: the generative row length (embedding rows: half)


@dataclass(frozen=True)
class StepRecord:
    seconds: float
    tokens: int
    embedding_loss: float
    generative_loss: float


def smollm2_training(spec: str, workspace: Workspace, sizes: TrainSizes, device: Device, box: TimeBox,
                     label: str, profile_to: Path | None = None) -> dict:
    """Part (b): `spec` ('smollm2', a .gguf file or a HF folder; a preset in a dry run) trained on the
    tiny corpus's train split, tokenized with its own tokenizer."""
    tokenizer = workspace.tokenizer(spec)
    _, info = load_tokenizer(tokenizer)
    backbone = loaded_backbone(spec, info, torch.bfloat16, device.torch_device)
    params = parameter_count(backbone.model)
    adapter = with_adapter(backbone, info.embed_id, checkpointing=False)
    pools = local_pools(workspace.corpus, "train", tokenizer)
    batches = mixed_batches(pools, info.pad_id, sizes.embedding_batch, sizes.generative_batch)
    result = measured_training(adapter, on_device(batches, device.torch_device), sizes, device, box, label, params,
                               profile_to)
    return {"backbone": Path(spec).name, **result}


def random_model_training(config, name: str, sizes: TrainSizes, device: Device, box: TimeBox, label: str,
                          profile_to: Path | None = None) -> dict:
    """Part (c): a random-init model of a transformers `config` with activation checkpointing, trained
    on one fixed step of full-length random-token rows."""
    backbone = random_backbone(config, torch.bfloat16, device.torch_device, name)
    params = parameter_count(backbone.model)
    embed_id = config.vocab_size - 1  # any row: it only has to be one the adapter trains
    adapter = with_adapter(backbone, embed_id, checkpointing=True)
    step = random_step(config.vocab_size, embed_id, sizes.embedding_batch, sizes.generative_batch, sizes.seq)
    batches = on_device(itertools.repeat(step), device.torch_device)
    result = measured_training(adapter, batches, sizes, device, box, label, params, profile_to)
    return {"backbone": name, "generative_seq": sizes.seq, "embedding_seq": sizes.seq // 2, **result}


def measured_training(adapter: Adapter, batches: Iterator[tuple[dict, dict]], sizes: TrainSizes, device: Device,
                      box: TimeBox, label: str, backbone_params: int, profile_to: Path | None = None) -> dict:
    """The timed steps' summary; with `profile_to`, one more step under the torch profiler (if the box has time
    left) writes its operator table there."""
    build_seconds = box.elapsed()
    options = StepOptions(EmbeddingConfig(), sizes.embedding_micro_batch, sizes.generative_micro_batch)
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=sizes.lr, weight_decay=0.0)

    def step() -> tuple[int, StepLosses]:
        """One optimizer step on the next batch, waited for: its tokens and losses."""
        embedding, generative = next(batches)
        losses = train_step(adapter, embedding, generative, options, torch.Tensor.backward, grad_scale=1.0)
        torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        device.sync()
        return step_tokens(embedding, generative), losses

    records, cut_short = train(step, sizes, device, box, label)
    result = {"build_seconds": build_seconds, "cut_short": cut_short,
              **summary(records, sizes, device, backbone_params)}
    if profile_to is not None and not box.expired():
        profiled_step(step, device, profile_to)
        result["profile"] = profile_to.name
    return result


def train(step: Callable[[], tuple[int, StepLosses]], sizes: TrainSizes, device: Device, box: TimeBox,
          label: str) -> tuple[list[StepRecord], bool]:
    """Up to `sizes.steps` training steps, each timed (at least the warm-up and one more, even past the box);
    the steps' records and whether the box cut them short."""
    progress = Progress(sizes.steps, f"{label} step", unit="tokens", interval=0)
    records: list[StepRecord] = []
    for index in range(sizes.steps):
        if index > sizes.warmup_steps and box.expired():
            return records, True
        device.sync()
        started = time.perf_counter()
        tokens, losses = step()
        records.append(StepRecord(time.perf_counter() - started, tokens, losses.embedding, losses.generative))
        progress.update(1, tokens, f"loss {losses.total:.3f}")
    return records, False


def profiled_step(step: Callable[[], object], device: Device, path: Path) -> None:
    """One more step under the torch profiler; its operators by their own device time (CPU time in a dry run),
    the most expensive first, as a text table at `path`."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.kind == "cuda"
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as profiler:
        step()
    table = profiler.key_averages().table(
        sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=PROFILE_ROWS,
        max_name_column_width=70)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table + "\n")
    print(f"profiled one more step: {path}", flush=True)


def summary(records: list[StepRecord], sizes: TrainSizes, device: Device, backbone_params: int) -> dict:
    """Throughput over the steps after the warm-up, peak memory, model FLOPs utilisation and the losses."""
    timed = records[sizes.warmup_steps:]
    tokens_per_s = sum(r.tokens for r in timed) / sum(r.seconds for r in timed)
    model_tflops = 6 * backbone_params * tokens_per_s / 1e12
    totals = [r.embedding_loss + r.generative_loss for r in records]
    ends = max(1, len(totals) // 4)
    return {
        "steps": len(records), "steps_planned": sizes.steps, "warmup_steps": sizes.warmup_steps,
        "embedding_batch": sizes.embedding_batch, "generative_batch": sizes.generative_batch,
        "lr": sizes.lr, "tokens_per_step": statistics.mean(r.tokens for r in timed),
        "step_seconds": statistics.median(r.seconds for r in timed), "tokens_per_s": tokens_per_s,
        "peak_memory_mib": device.peak_memory_mib(), "backbone_params": backbone_params,
        "model_tflops_per_s": model_tflops,
        "mfu": model_tflops / device.peak_tflops if device.peak_tflops else None,
        "loss_embedding": [r.embedding_loss for r in records], "loss_generative": [r.generative_loss for r in records],
        "first_loss": totals[0], "last_loss": totals[-1],
        "loss_fell": statistics.mean(totals[-ends:]) < statistics.mean(totals[:ends]),
    }
