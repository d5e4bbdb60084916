"""The optimizer's state in a form that does not depend on the number of ranks, so that a run can
resume on fewer or more workers (an elastic run, a node that did not come back).

DeepSpeed's ZeRO checkpoint holds each rank's partition of the flat fp32 weights and of AdamW's
moments, and DeepSpeed refuses to load it into another number of ranks. Next to it, rank 0 writes
`optimizer.safetensors`: every trainable tensor's whole AdamW moments (`<name>::exp_avg`,
`<name>::exp_avg_sq`, gathered with DeepSpeed's tensor-fragment API) and the optimizer's step count in
the header. On another number of ranks the engine is restored from it and from `adapter.safetensors`
(the fp32 master weights): the same weights, moments and step, so the next update is the one the
run would have made. ZeRO stages 1 and 2; under ZeRO-3 the parameters themselves are partitioned and
a run resumes on its own number of workers only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from recfound.data.atomic import atomic_write_bytes
from recfound.model.adapter import Adapter
from recfound.model.state import read_adapter

SEPARATOR = "::"
STEP_KEY = "step"


def supported(engine: Any) -> bool:
    """Whether the engine's state can move to another number of ranks (ZeRO stages 1 and 2)."""
    return engine.zero_optimization_stage() in (1, 2)


def _base_optimizer(engine: Any) -> torch.optim.Optimizer:
    return engine.optimizer.optimizer  # the torch optimizer inside DeepSpeed's ZeRO wrapper


def _step_count(engine: Any) -> float:
    steps = {float(state[STEP_KEY]) for state in _base_optimizer(engine).state.values() if STEP_KEY in state}
    if len(steps) > 1:
        raise RuntimeError(f"the optimizer's parameter groups disagree on the step count: {sorted(steps)}")
    return steps.pop() if steps else 0.0


def _moment_keys(engine: Any) -> list[str]:
    """The optimizer's per-element state keys (AdamW: exp_avg, exp_avg_sq), the same on every rank (a
    rank's partition may hold no element of a given tensor, so the tensors cannot say)."""
    keys = {key for flat, state in _base_optimizer(engine).state.items() for key, value in state.items()
            if torch.is_tensor(value) and value.shape == flat.shape}
    return sorted(keys)


def full_optimizer_state(engine: Any, adapter: Adapter, keep: bool) -> tuple[dict[str, torch.Tensor], float]:
    """Every trainable tensor's whole optimizer moments, and the step count (a collective: every rank
    calls it; ZeRO stages 1 and 2); `keep`: whether this rank keeps the tensors (the one that writes them)."""
    from deepspeed.utils import safe_get_full_optimizer_state

    tensors, keys = {}, _moment_keys(engine)
    for name, param in adapter.trainable_state().items():
        for key in keys:  # each a collective: the ranks' fragments summed
            whole = safe_get_full_optimizer_state(param, key)
            if keep:
                tensors[f"{name}{SEPARATOR}{key}"] = whole.detach().cpu().contiguous()
    return tensors, _step_count(engine)


def save_optimizer_state(path: Path, tensors: dict[str, torch.Tensor], step: float) -> None:
    """Write the gathered state (rank 0), complete or not at all."""
    from safetensors.torch import save

    atomic_write_bytes(path, save(tensors, metadata={STEP_KEY: json.dumps(step)}))


def load_into_engine(engine: Any, adapter: Adapter, adapter_file: Path, optimizer_file: Path) -> None:
    """Set the engine's fp32 master weights, the module's weights, the optimizer's moments and its step
    from a checkpoint written by any number of ranks (every rank calls it)."""
    from deepspeed.utils import safe_set_full_fp32_param, safe_set_full_optimizer_state
    from safetensors import safe_open

    _, weights = read_adapter(adapter_file)
    params = adapter.trainable_state()
    with safe_open(str(optimizer_file), framework="pt") as handle:
        step = json.loads(handle.metadata()[STEP_KEY])
        moments = {name: handle.get_tensor(name) for name in handle.keys()}
    keys = sorted({name.rsplit(SEPARATOR, 1)[1] for name in moments})
    missing = sorted(set(params) - set(weights)) + sorted(
        f"{name}{SEPARATOR}{key}" for name in params for key in keys if f"{name}{SEPARATOR}{key}" not in moments)
    if missing or not keys:
        raise ValueError(f"{optimizer_file.parent}: the checkpoint lacks {', '.join(missing[:5]) or 'optimizer moments'}"
                         f"{' ...' if len(missing) > 5 else ''}: resume it on the number of workers that wrote it")
    _create_state(engine, keys, step)
    with torch.no_grad():
        for name, param in params.items():
            master = weights[name].to(torch.float32)
            safe_set_full_fp32_param(param, master)
            param.data.copy_(master.to(param.dtype))  # every rank holds the whole module under ZeRO 1-2
            for key in keys:
                safe_set_full_optimizer_state(param, moments[f"{name}{SEPARATOR}{key}"], key)


def _create_state(engine: Any, keys: list[str], step: float) -> None:
    """The torch optimizer creates its state at its first step; a resumed engine needs it before: zeros
    for each per-element key, the step count, then DeepSpeed's link of the per-parameter fragments."""
    base = _base_optimizer(engine)
    for group in base.param_groups:
        for flat in group["params"]:
            state = base.state[flat]
            for key in keys:
                state.setdefault(key, torch.zeros_like(flat, memory_format=torch.preserve_format))
            state[STEP_KEY] = torch.tensor(float(step))  # AdamW keeps it as a float32 scalar tensor
    engine.optimizer._lazy_init_hp_params_optimizer_state()  # DeepSpeed 0.19 (pinned): links the fragments
