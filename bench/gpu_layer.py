"""Part (a) of the GPU suite: forward+backward of one frozen d x d projection in bf16, the fused TMoLE
layer vs peft LoRA (same rank) vs the per-expert loop, with bench/tmole_layer.py's variants and timing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from gpu_common import Device, TimeBox
from tmole_layer import build, round_times

FUSED, LOOP, LORA = "fused TMoLE", "per-expert loop", "peft LoRA"


@dataclass(frozen=True)
class LayerSizes:
    dim: int
    batch: int
    seq: int
    rank: int
    rounds: int


def layer_benchmark(sizes: LayerSizes, device: Device, box: TimeBox, label: str) -> dict:
    """Median ms of each variant over the rounds the box allows, and each one's ratio to peft LoRA."""
    variants = build(sizes.dim, sizes.rank, device.kind, torch.bfloat16, sizes.batch)
    x = torch.randn(sizes.batch, sizes.seq, sizes.dim, device=device.torch_device, dtype=torch.bfloat16,
                    requires_grad=True)
    times = round_times(variants, x, torch.randn_like(x), sizes.rounds, device.sync, box.expired)
    ms = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    rounds = len(times[LORA])
    print(f"{label}: {rounds}/{sizes.rounds} rounds, fused / peft LoRA = {ms[FUSED] / ms[LORA]:.2f}x, "
          f"per-expert loop / fused = {ms[LOOP] / ms[FUSED]:.2f}x", flush=True)
    return {"dim": sizes.dim, "tokens": sizes.batch * sizes.seq, "rank": sizes.rank, "dtype": "bfloat16",
            "rounds": rounds, "rounds_planned": sizes.rounds, "cut_short": rounds < sizes.rounds,
            "ms_fwd_bwd": ms, "vs_peft_lora": {name: value / ms[LORA] for name, value in ms.items()},
            "fused_vs_lora": ms[FUSED] / ms[LORA], "loop_vs_fused": ms[LOOP] / ms[FUSED]}
