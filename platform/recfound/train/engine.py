"""The DeepSpeed strategy: one ZeRO engine (stage 1, 2 or 3) over the adapter's trainable tensors,
on GPUs and CPUs alike.

A step makes many `engine.backward` calls (GradCache surrogates and generative micro-batches)
before its single `engine.step()`. They run inside `engine.coalesce_grad_reduction()`
(`accumulating`): every backward leaves its gradients on the parameters and one reduction at the
end of the block feeds the step. That is DeepSpeed's API for this pattern (GritLM's unified mode
falls back to FSDP because GradCache and DeepSpeed's accumulation did not mix); without it, ZeRO-3
kept only a fraction of the step's gradient in our two-rank test. ZeRO's optimizer skips a step
whose gradients are not finite and clears them; the loop counts such steps. The learning rate is a
function of the loop's step (`set_learning_rate` before every `engine.step()`), so a skipped
update does not shift the schedule and a resumed run needs no scheduler state.
"""

from __future__ import annotations

import functools
import math
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from recfound.config import TrainSection
from recfound.model.adapter import Adapter

LR_SCHEDULES = ("cosine", "linear", "constant")
SUPPORTED_STAGES = (1, 2, 3)


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float) -> float:
    """The learning-rate multiplier after `step` optimizer steps: linear warm-up from 1/(warmup+1),
    then constant, linear or cosine decay to `min_ratio` at `total_steps`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def deepspeed_config(train: TrainSection) -> dict[str, Any]:
    """The DeepSpeed config of a run's `train` section (see docs/training.md)."""
    if train.zero_stage not in SUPPORTED_STAGES:  # the config refuses these too; this guards direct callers
        raise ValueError(f"train.zero_stage {train.zero_stage} is not supported: use 1, 2 or 3 (stage 0 has no "
                         "non-finite-step check and no coalesced reduction)")
    return {
        "train_micro_batch_size_per_gpu": 1,  # bookkeeping only: the loop sizes its own micro-batches
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": train.zero_stage},
        "gradient_clipping": float(train.max_grad_norm),
        # torch's AdamW: DeepSpeed's fused and CPU Adam JIT-compile for minutes on first use.
        "optimizer": {"type": "AdamW", "params": {"lr": train.lr, "weight_decay": train.weight_decay,
                                                  "betas": [0.9, 0.999], "eps": 1e-8, "torch_adam": True}},
        "bf16": {"enabled": train.precision == "bf16", "check_grad_overflow": True},
        "steps_per_print": 2 ** 31 - 1,
        "wall_clock_breakdown": False,
    }


def build_engine(adapter: Adapter, train: TrainSection, optimizer: dict[str, Any] | None = None) -> Any:
    """`deepspeed.initialize` over the adapter's trainable tensors (the DeepSpeedEngine). `optimizer`
    replaces the AdamW entry of the DeepSpeed config (the tests use plain SGD, whose update is
    exactly -lr * gradient)."""
    deepspeed = import_deepspeed()
    config = deepspeed_config(train)
    if optimizer is not None:
        config.update(optimizer=optimizer, zero_allow_untested_optimizer=True)
    if train.zero_stage == 3:
        _register_token_rows(adapter)
    engine, *_ = deepspeed.initialize(
        model=adapter, model_parameters=[p for p in adapter.parameters() if p.requires_grad],
        config=config, dist_init_required=False)
    return engine


def import_deepspeed() -> Any:
    """`deepspeed`, ready for the engine (the shared-memory collective skipped, below), imported without
    MLflow: DeepSpeed imports it for its autotuner only, which runs never use, and the import costs every
    worker process over a second of CPU at each start and restart. MLflow stays importable afterwards."""
    hidden = "mlflow" not in sys.modules
    if hidden:
        sys.modules["mlflow"] = None  # DeepSpeed's `import mlflow` raises ImportError, which it catches
    try:
        import deepspeed
    finally:
        if hidden:
            del sys.modules["mlflow"]
    _skip_shared_memory_collective()
    _compile_muon_kernels_on_first_use()
    return deepspeed


def _compile_muon_kernels_on_first_use() -> None:
    """DeepSpeed's ZeRO optimizers import its Muon module to check `isinstance(optimizer, MuonWithAuxAdam)`,
    and that module wraps its kernels in `torch.compile` at import, which imports TorchDynamo and Inductor:
    3 s of CPU in a fresh process, 1.2-1.6 s in a training worker, at every start and restart, for an
    optimizer our runs never use (they use AdamW). DeepSpeed's decorator (`deepspeed.runtime.compiler.compile`,
    used as `@compile()` on plain functions by that module alone in DeepSpeed 0.19.8; recheck on an upgrade)
    is made lazy: a kernel is compiled on its first call, so DeepSpeed's Muon, if used, still compiles."""
    from deepspeed.runtime import compiler

    compiler.compile = _compile_on_first_call


def _compile_on_first_call() -> Any:
    """A decorator (in place of `torch.compile`) that compiles the function when it is first called."""
    def decorate(function: Any) -> Any:
        compiled = None

        @functools.wraps(function)
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal compiled
            if compiled is None:
                compiled = torch.compile(function)
            return compiled(*args, **kwargs)

        return call

    return decorate


def _skip_shared_memory_collective() -> None:
    """DeepSpeed's communication backend JIT-compiles its CPU shared-memory all-reduce op when it starts
    (30-60 s on 2 cores, once per extension folder, i.e. again in every fresh job environment). Only
    DeepSpeed's inference all-reduce calls that op, never training: marking it incompatible skips the
    build (deepspeed.ops keeps one dict of compatible ops, so the mark persists)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def accumulating(engine: Any) -> AbstractContextManager:
    """The block in which one step's backwards accumulate (see module doc); `engine.step()` follows it."""
    return engine.coalesce_grad_reduction()


def gathered(engine: Any, adapter: Adapter) -> AbstractContextManager:
    """The adapter's whole trainable tensors readable on every rank for the block (ZeRO-3 partitions
    them; every rank must enter). A no-op under ZeRO-1/2."""
    if engine.zero_optimization_stage() != 3:
        return nullcontext()
    from deepspeed.runtime.zero import GatheredParameters

    return GatheredParameters([p for p in adapter.parameters() if p.requires_grad], modifier_rank=None)


def full_trainable_state(engine: Any, adapter: Adapter) -> dict[str, torch.Tensor]:
    """Every trainable tensor whole, on every rank (a collective: every rank calls it): the optimizer's
    fp32 master copies under bf16 (the bf16 module weights would round every saved change to 8 bits),
    else the parameters themselves (gathered under ZeRO-3)."""
    if engine.bfloat16_enabled():
        from deepspeed.utils import safe_get_full_fp32_param

        return {name: safe_get_full_fp32_param(p).detach().cpu() for name, p in adapter.trainable_state().items()}
    with gathered(engine, adapter):
        return {name: p.detach().cpu().clone() for name, p in adapter.trainable_state().items()}


def _register_token_rows(adapter: Adapter) -> None:
    """ZeRO-3 gathers a module's parameters when the module runs; the token rows are read by hooks
    on the embedding (and the tied head) instead, so tell ZeRO which modules use them."""
    from deepspeed.runtime.zero import register_external_parameter

    model = adapter.model
    register_external_parameter(model.get_input_embeddings(), adapter.token_rows.rows)
    if adapter.token_rows.tied:
        register_external_parameter(model.get_output_embeddings(), adapter.token_rows.rows)


def set_learning_rate(engine: Any, train: TrainSection, step: int) -> float:
    """Set the learning rate of 1-based training step `step` in every parameter group; returns it."""
    warmup = math.ceil(train.lr_warmup_ratio * train.steps)
    lr = train.lr * lr_factor(step - 1, train.steps, warmup, train.lr_schedule, train.min_lr_ratio)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
    return lr

