"""What does TMoLE cost next to plain LoRA? Forward+backward of one projection, measured side by side.

Variants on the same frozen nn.Linear (d x d) and the same input (a generative batch, so the 4 of
E=S=G=2 experts that are allowed): the fused TMoLE layer, a plain Python loop over the allowed
experts, and peft LoRA of rank r; the frozen projection alone is the yardstick for what each adds.
d=1024 fp32 on CPU, d=4096 bf16 on a GPU when there is one.
Goals: fused <= 1.15x peft LoRA on CPU (<= 1.05x on GPU), and >= 1.5x faster than the loop.

Run: PYTHONPATH=platform python bench/tmole_layer.py [--dim 1024 --batch 8 --seq 128 --rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.model.adapter import AdapterConfig  # noqa: E402
from recfound.model.tmole import Routing, TMoLELinear  # noqa: E402
from recfound.progress import format_table  # noqa: E402
from recfound.tasks import Kind  # noqa: E402

TASKS = 13
WARMUP_ROUNDS = 3


class LoopTMoLE(nn.Module):
    """The same experts and gates as `fused`, summed one expert at a time (the authors' formulation)."""

    def __init__(self, fused: TMoLELinear) -> None:
        super().__init__()
        self.fused = fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused, routing, r = self.fused, self.fused.routing, self.fused.rank
        dropped, rescale = fused.dropped(x)
        gate, out = fused.gates(routing.task_embedding, routing.allowed) * (fused.scale * rescale), fused.base_layer(x)
        for k, j in enumerate(range(routing.allowed.start, routing.allowed.stop)):
            expert = dropped @ fused.A[j * r:(j + 1) * r].T @ fused.B[:, j * r:(j + 1) * r].T
            out = out + gate[:, k].view(-1, 1, 1) * expert
        return out


def build(dim: int, rank: int, device: str, dtype: torch.dtype, batch: int) -> dict[str, nn.Module]:
    """The variants by name, all on one frozen d x d projection, in training mode (dropout on)."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    config = AdapterConfig(rank=rank, alpha=4.0 * rank, dropout=0.1)
    base = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype).requires_grad_(False)
    routing = Routing(config)
    routing.allowed = routing.allowed_by_kind[Kind.GENERATIVE]
    table = nn.Embedding(TASKS, config.task_dim, device=device, dtype=dtype)
    task_ids = torch.randint(3, TASKS, (batch,), device=device)
    fused = TMoLELinear(base, config, routing)
    nn.init.normal_(fused.B, std=0.02)
    loop = LoopTMoLE(fused)

    def look_up(module: nn.Module, args: tuple) -> None:  # what the adapter does once per model forward
        routing.task_embedding = table(task_ids)

    for module in (fused, loop):
        module.register_forward_pre_hook(look_up)
    holder = nn.Module()
    holder.q_proj = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype).requires_grad_(False)
    holder.q_proj.weight.data.copy_(base.weight)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                       target_modules=["q_proj"]), holder)
    return {"fused TMoLE": fused.train(), "per-expert loop": loop.train(), "peft LoRA": holder.q_proj.train(),
            "frozen base only": base}


def step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> None:
    module(x).backward(grad)
    x.grad = None
    for param in module.parameters():
        param.grad = None


def timed(fn: Callable[[], None], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def round_times(variants: dict[str, nn.Module], x: torch.Tensor, grad: torch.Tensor, rounds: int,
                sync: Callable[[], None], should_stop: Callable[[], bool] = lambda: False) -> dict[str, list[float]]:
    """Seconds of one fwd+bwd per variant in each of up to `rounds` timed rounds (after the warm-up
    rounds), the order rotating each round so that machine load hits all variants alike;
    `should_stop` ends the rounds early (asked before each timed round after the first)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds + WARMUP_ROUNDS):
        if round_ > WARMUP_ROUNDS and should_stop():
            break
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = timed(lambda: step(variants[name], x, grad), sync)
            if round_ >= WARMUP_ROUNDS:
                times[name].append(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    parser.add_argument("--dim", type=int, default=4096 if cuda else 1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    variants = build(args.dim, args.rank, device, dtype, args.batch)
    x = torch.randn(args.batch, args.seq, args.dim, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)
    median = {name: statistics.median(t) for name, t in round_times(variants, x, grad, args.rounds, sync).items()}
    names = list(variants)
    lora, fused, loop, base = (median[n] for n in ("peft LoRA", "fused TMoLE", "per-expert loop", "frozen base only"))
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"one projection d={args.dim} {str(dtype).removeprefix('torch.')}, {args.batch}x{args.seq} tokens, "
          f"r={args.rank}, E=S=G=2 (4 experts allowed), dropout 0.1, {where}; median of {args.rounds}\n")
    print(format_table(["variant", "ms fwd+bwd", "vs peft LoRA"],
                       [[name, median[name] * 1e3, median[name] / lora] for name in names]))
    goal = 1.05 if cuda else 1.15
    print(f"\nfused / peft LoRA = {fused / lora:.2f}x (goal <= {goal}x); "
          f"per-expert loop / fused = {loop / fused:.2f}x (goal >= 1.5x); "
          f"over the frozen base: loop adds {(loop - base) / (fused - base):.2f}x what fused adds")


if __name__ == "__main__":
    main()
