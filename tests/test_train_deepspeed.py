"""GradCache + gradient accumulation through DeepSpeed ZeRO-1/2/3 (2 gloo ranks on CPU, the loop's
coalesced reduction): one engine step moves the adapter by exactly the full-batch gradient at the
learning rate the loop sets, and the saved checkpoint holds the whole trained adapter (gathered
under ZeRO-3, never empty), which reloads, and only through the restricted unpickler.

`_rank_main` is what the suite's one pair of spawned gloo ranks runs (`two_gloo_ranks` in conftest.py):
these engine steps and test_train_step's distributed cases."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from recfound.config import RunConfig
from test_train_step import CONFIGS, collated, full_batch, model, rows, run_split_cases

LR = 0.5
LR_SCHEDULE = RunConfig().with_overrides({"train.lr": LR, "train.lr_schedule": "constant",
                                          "train.lr_warmup_ratio": 0.0}).train
MUON_MODULE = "deepspeed.runtime.zero.muon.original_muon"  # its kernels: torch.compile at import, unless made lazy
# One engine step per (ZeRO stage, precision).
STEPS = {"zero1": (1, "fp32"), "zero2": (2, "fp32"), "zero3": (3, "fp32"), "zero2-bf16": (2, "bf16")}


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # one core each, as Ray gives a 1-CPU worker: two ranks of 2 threads on 2 cores crawl
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        run_split_cases(rank, world, Path(out) / "splits")
        for name, (stage, precision) in STEPS.items():
            _one_engine_step(rank, world, stage, precision, Path(out) / name)
        _optimizer_state_round_trip(rank, world, "bf16", Path(out) / "adamw-bf16")  # the GPU path; fp32: test_multinode
        if rank == 0:  # what building and stepping every engine imported
            (Path(out) / "modules.json").write_text(json.dumps(
                {name: name in sys.modules for name in (MUON_MODULE, "torch._inductor.compile_fx")}))
    finally:
        dist.barrier()  # no rank tears gloo down while the other is still in a collective
        dist.destroy_process_group()
    # The results are saved: skip the interpreter's teardown, where a library's leftover thread
    # occasionally aborts the process ("terminate called without an active exception").
    os._exit(0)


def _backward_share(adapter, engine, rank: int, world: int, seed: int = 0) -> None:
    """This rank's share of a batch of `rows(seed)` through the loop's path: many backwards, one coalesced
    reduction (the caller then sets the LR and steps)."""
    import numpy as np

    from recfound.train.engine import accumulating
    from recfound.train.step import StepOptions, train_step

    embedding_rows, generative_rows = rows(seed)
    mine = lambda table: table.take(np.arange(rank, table.num_rows, world))
    embedding, generative = collated(mine(embedding_rows), mine(generative_rows))
    with accumulating(engine):
        train_step(adapter, embedding, generative, StepOptions(CONFIGS["defaults"], 2, 2),
                   lambda loss: engine.backward(loss, scale_wrt_gas=False))


def _one_engine_step(rank: int, world: int, stage: int, precision: str, out: Path) -> None:
    """A fresh adapter and engine, one GradCache step through the loop's path, the delta and a checkpoint."""
    from safetensors.torch import save_file

    from recfound.train.checkpoint import LoopState, save_checkpoint
    from recfound.train.engine import build_engine, gathered, set_learning_rate

    adapter = model(dtype="float32")
    train = RunConfig().with_overrides({"train.zero_stage": stage, "train.max_grad_norm": 0.0,
                                        "train.precision": precision}).train
    engine = build_engine(adapter, train, optimizer={"type": "SGD", "params": {"lr": 1.0}})
    with gathered(engine, adapter):
        before = {n: p.detach().clone() for n, p in adapter.trainable_state().items()}
    _backward_share(adapter, engine, rank, world)
    assert set_learning_rate(engine, LR_SCHEDULE, step=1) == LR  # the loop sets the LR before each step
    engine.step()
    with gathered(engine, adapter):
        delta = {n: (p.detach() - before[n]).contiguous() for n, p in adapter.trainable_state().items()}
    # Each rank saves its part into a folder of its own, as a run's ranks do, and the parts are joined into one
    # checkpoint as Ray Train joins them (one shared folder let a rank's manifest list the other's files while
    # they were still being written, which a busy machine turned into a FileNotFoundError).
    save_checkpoint(out / "parts" / f"rank{rank}", engine, adapter, LoopState(step=1), {}, rank, world)
    dist.barrier()
    if rank == 0:
        for part in sorted((out / "parts").iterdir()):
            shutil.copytree(part, out / "ckpt", dirs_exist_ok=True)
        save_file(delta, str(out / "delta.safetensors"))
    dist.barrier()


def _optimizer_state_round_trip(rank: int, world: int, precision: str, out: Path) -> None:
    """Two AdamW steps under ZeRO-2 and a checkpoint; a fresh engine restored from its whole tensors (what a
    resume on another number of workers reads: adapter.safetensors, optimizer.safetensors), and one built
    from the weights alone; a third step on all three. Rank 0 saves the three results."""
    from safetensors.torch import save_file

    from recfound.model.state import load_adapter
    from recfound.run_layout import ADAPTER_FILE, OPTIMIZER_FILE
    from recfound.train.checkpoint import LoopState, save_checkpoint
    from recfound.train.engine import build_engine, full_trainable_state, set_learning_rate
    from recfound.train.optimizer_state import load_into_engine

    train = RunConfig().with_overrides({"train.zero_stage": 2, "train.precision": precision, "train.lr": 0.01,
                                        "train.lr_schedule": "constant", "train.lr_warmup_ratio": 0.0}).train

    def step(adapter, engine, seed: int) -> None:
        _backward_share(adapter, engine, rank, world, seed)
        set_learning_rate(engine, train, step=seed + 1)
        engine.step()

    adapter = model(dtype="float32")
    engine = build_engine(adapter, train)
    for seed in (0, 1):
        step(adapter, engine, seed)
    save_checkpoint(out / "saved", engine, adapter, LoopState(step=2), {}, rank, world)
    restored_adapter = model(dtype="float32")
    restored = build_engine(restored_adapter, train)
    load_into_engine(restored, restored_adapter, out / "saved" / ADAPTER_FILE, out / "saved" / OPTIMIZER_FILE)
    weights_only_adapter = model(dtype="float32")
    load_adapter(weights_only_adapter, out / "saved" / ADAPTER_FILE)
    weights_only = build_engine(weights_only_adapter, train)
    results = {}
    for name, (each_adapter, each_engine) in {"continued": (adapter, engine), "restored": (restored_adapter, restored),
                                              "weights_only": (weights_only_adapter, weights_only)}.items():
        step(each_adapter, each_engine, 2)
        results.update({f"{name}/{key}": value for key, value in full_trainable_state(each_engine, each_adapter).items()})
    if rank == 0:
        save_file(results, str(out / "third_step.safetensors"))
    dist.barrier()


def test_engines_load_deepspeeds_muon_module_without_compiling_its_kernels(two_gloo_ranks):
    """ZeRO's optimizers import DeepSpeed's Muon module (for an isinstance check); its kernels compile on first use
    only, so no engine pays for importing TorchInductor (`recfound.train.engine`)."""
    imported = json.loads((two_gloo_ranks / "modules.json").read_text())
    assert imported == {MUON_MODULE: True, "torch._inductor.compile_fx": False}, imported


def test_optimizer_state_moves_whole_into_a_new_engine(two_gloo_ranks):
    """The whole-tensor optimizer state restores an engine exactly (ZeRO-2, bf16: the GPU path): its next
    AdamW step is the one the trained engine takes (bit for bit), while an engine given the weights without
    the moments steps elsewhere. The whole tensors do not depend on the number of ranks; moving them to
    another number is checked end to end in test_multinode (fp32)."""
    from safetensors.torch import load_file

    results = load_file(two_gloo_ranks / "adamw-bf16" / "third_step.safetensors")
    names = [key.split("/", 1)[1] for key in results if key.startswith("continued/")]
    assert names
    for name in names:
        torch.testing.assert_close(results[f"restored/{name}"], results[f"continued/{name}"], rtol=0, atol=0, msg=name)
    moved = max((results[f"weights_only/{n}"] - results[f"continued/{n}"]).abs().max().item() for n in names)
    assert moved > 1e-4, moved


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_one_zero_step_applies_the_full_batch_gradient_at_the_set_lr(two_gloo_ranks, stage):
    from safetensors.torch import load_file

    from recfound.model.state import load_adapter, read_adapter

    out = two_gloo_ranks / f"zero{stage}"
    delta = load_file(out / "delta.safetensors")
    adapter = model(dtype="float32").double()  # the ranks' starting point, differentiated in float64
    _, expected = full_batch(adapter, *collated(*rows()), CONFIGS["defaults"])
    for name, grad in expected.items():
        torch.testing.assert_close(delta[name].double(), -LR * grad, rtol=2e-3, atol=2e-6, msg=name)
    # The saved adapter is the whole trained adapter, and it reloads.
    header, saved = read_adapter(out / "ckpt" / "adapter.safetensors")
    start = model(dtype="float32").trainable_state()
    for name, tensor in saved.items():
        assert tensor.numel() == start[name].numel() > 0
        torch.testing.assert_close(tensor, start[name].detach() + delta[name], msg=name)
    fresh = model(dtype="float32")
    load_adapter(fresh, out / "ckpt" / "adapter.safetensors")
    torch.testing.assert_close(fresh.trainable_state()["task_table.weight"], saved["task_table.weight"])


def test_zero_stage_0_is_refused_by_name():
    from recfound.config import ConfigError

    with pytest.raises(ConfigError, match=r"train\.zero_stage: must be in \[1, 3\]"):
        RunConfig().with_overrides({"train.zero_stage": 0})


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    from recfound.train.engine import lr_factor

    assert [lr_factor(s, 10, 2, "linear", 0.1) for s in (0, 1, 2, 6, 10)] == pytest.approx(
        [1 / 3, 2 / 3, 1.0, 0.1 + 0.9 * 0.5, 0.1])
    assert lr_factor(6, 10, 2, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(9, 10, 2, "constant", 0.0) == 1.0


def test_bf16_checkpoints_hold_the_fp32_master_weights(two_gloo_ranks):
    """Under bf16 the module weights are bf16; the saved adapter holds the optimizer's fp32 masters
    (changes smaller than a bf16 step survive), and it loads into a float32 adapter."""
    from recfound.model.state import load_adapter, read_adapter

    checkpoint = two_gloo_ranks / "zero2-bf16" / "ckpt" / "adapter.safetensors"
    _, saved = read_adapter(checkpoint)
    assert all(t.dtype == torch.float32 for t in saved.values())
    trained = saved["task_table.weight"]
    assert not torch.equal(trained, trained.bfloat16().float())  # not bf16 values widened
    load_adapter(model(dtype="float32"), checkpoint)


def test_every_checkpoint_file_loads_without_unpickling_code(two_gloo_ranks):
    """The restricted loader reads every file DeepSpeed wrote for each ZeRO stage and precision (what a
    resume loads), tensors intact."""
    import torch

    from recfound.train.unpickling import load_restricted

    files = sorted(two_gloo_ranks.glob("*/ckpt/zero/**/*.pt"))
    assert {path.relative_to(two_gloo_ranks).parts[0] for path in files} == set(STEPS)
    for path in files:
        restricted = load_restricted(str(path))
        assert restricted.keys() == torch.load(path, weights_only=False).keys(), path


class _Planted:
    """What an attacker pickles: unpickling it creates `marker` (any code could run instead)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (Path(self.marker),)


def test_a_planted_checkpoint_file_is_refused_without_running_it(tmp_path):
    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    from recfound.train.unpickling import RestrictedLoads, UnsafeCheckpointError

    planted, ran = tmp_path / "mp_rank_00_model_states.pt", tmp_path / "code-ran"
    torch.save({"module": {}, "payload": _Planted(str(ran))}, planted)
    TorchCheckpointEngine().load(str(planted))  # DeepSpeed's own loader runs it...
    assert ran.exists()
    ran.unlink()
    with pytest.raises(UnsafeCheckpointError, match=rf"{re.escape(str(planted))}: refused to load: it holds more than "
                                                     r"tensors and DeepSpeed's state \(it would call getattr\)"):
        RestrictedLoads(TorchCheckpointEngine()).load(str(planted))  # ...the one resumes use does not
    assert not ran.exists()
