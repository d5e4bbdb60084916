"""Part (e) of the GPU suite: why SDPA's cuDNN backend is kept off (`recfound.model.attention.
without_cudnn_attention`). A random-init model of SmolLM2-135M's shape with TMoLE, in eval mode, encodes
batches padded to distinct lengths, as every real batch is padded to its own longest row: first with cuDNN
attention allowed (it builds an execution graph for each new shape), then with it off, then the same number
of batches of one repeated length (the yardstick: no shape is new). Milliseconds per batch, each measured
on lengths no earlier pass used, so a pass never meets a shape another one already built."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LlamaConfig, PretrainedConfig

from gpu_common import Device, TimeBox
from gpu_model import random_backbone, with_adapter
from recfound.model.attention import without_cudnn_attention
from recfound.model.objectives import embed

# SmolLM2-135M's shape (its tokenizer's vocabulary plus our <embed> row); the weights do not change the timings.
SMOLLM2_SHAPE = dict(vocab_size=49153, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                     tie_word_embeddings=True)


@dataclass(frozen=True)
class ShapeSizes:
    rows: int  # rows a batch
    batches: int  # batches a pass
    first_length: int  # the first pass's first padded length; each batch one token longer than the last


def smollm2_shaped_config() -> LlamaConfig:
    return LlamaConfig(**SMOLLM2_SHAPE)


def attention_shapes(config: PretrainedConfig, name: str, sizes: ShapeSizes, device: Device, box: TimeBox,
                     label: str) -> dict:
    """ms per encoded batch: distinct lengths with cuDNN attention allowed, distinct lengths without it, one
    repeated length without it. Leaves cuDNN attention off, as every model load does."""
    adapter = with_adapter(random_backbone(config, torch.bfloat16, device.torch_device, name),
                           config.vocab_size - 1, checkpointing=False).eval()
    adapter.set_tasks([0] * sizes.rows)
    generator = torch.Generator().manual_seed(0)
    start = sizes.first_length
    passes = [("distinct lengths, cuDNN attention allowed", True, range(start, start + sizes.batches)),
              ("distinct lengths, cuDNN attention off", False,
               range(start + sizes.batches, start + 2 * sizes.batches)),
              ("one repeated length, cuDNN attention off", False, [start + 2 * sizes.batches] * sizes.batches)]
    result: dict = {"backbone": name, "rows": sizes.rows, "batches_planned": sizes.batches, "passes": {}}
    try:
        # Untimed, at a length no pass uses, without cuDNN: the model's first forward picks kernels and grows the
        # allocator, which would otherwise count against the first pass.
        without_cudnn_attention()
        timed_batches(adapter.model, config.vocab_size, sizes.rows, [start - 1], generator, device, box)
        for title, cudnn, lengths in passes:
            torch.backends.cuda.enable_cudnn_sdp(cudnn)
            times = timed_batches(adapter.model, config.vocab_size, sizes.rows, lengths, generator, device, box)
            result["passes"][title] = {"batches": len(times), "ms_per_batch": 1e3 * statistics.mean(times),
                                       "ms_first_batch": 1e3 * times[0], "ms_median": 1e3 * statistics.median(times)}
            print(f"{label}: {title}: {len(times)} batches, {1e3 * statistics.mean(times):.1f} ms a batch",
                  flush=True)
    finally:
        without_cudnn_attention()
    timed = result["passes"]
    result["cut_short"] = any(entry["batches"] < sizes.batches for entry in timed.values())
    base = timed["one repeated length, cuDNN attention off"]["ms_per_batch"]
    result["vs_repeated"] = {title: entry["ms_per_batch"] / base for title, entry in timed.items()}
    return result


@torch.inference_mode()
def timed_batches(model: nn.Module, vocab: int, rows: int, lengths: Sequence[int], generator: torch.Generator,
                  device: Device, box: TimeBox) -> list[float]:
    """Seconds of each batch's encoding (rows of random tokens padded to the batch's length, the odd rows a
    quarter shorter, so the padding mask is used); at least one batch, then as many as the box allows."""
    times: list[float] = []
    for length in lengths:
        if times and box.expired():
            break
        ids = torch.randint(0, vocab - 1, (rows, length), generator=generator).to(device.torch_device)
        mask = torch.ones_like(ids)
        mask[1::2, length - length // 4:] = 0
        device.sync()
        started = time.perf_counter()
        embed(model, ids, mask)
        device.sync()
        times.append(time.perf_counter() - started)
    return times
