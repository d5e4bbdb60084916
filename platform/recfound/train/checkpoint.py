"""What a training checkpoint holds and how a worker writes and reads it.

A checkpoint folder (`checkpoint_<step>`, one per `checkpoint.every` steps, reported through
`ray.train.report`; the names are `recfound.run_layout`'s):
  adapter.safetensors   the adapter's trainable tensors (fp32 masters under bf16) + header (rank 0;
                        what merging and export read)
  progress.json         step, bad-step counters, the mixers' positions (rank 0)
  scheduler.json        the S2Sched actor's state (rank 0)
  zero/                 DeepSpeed's ZeRO checkpoint: every rank's optimizer partition
                        (DeepSpeed's own torch format, read back without unpickling code:
                        `recfound.train.unpickling`; the frozen base is left out)
  optimizer.safetensors the optimizer's moments whole, and its step (rank 0; ZeRO 1-2): what a
                        resume on another number of workers reads (`recfound.train.optimizer_state`)
  manifest-rank<R>.json each rank's files with sizes and hashes, written last (`recfound.train.manifest`)
RNG states and the LR schedule are not stored: every step re-seeds from (run seed, step, rank) and
sets its learning rate from the step, so a resumed step does what the uninterrupted one did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recfound.data.atomic import atomic_write_bytes
from recfound.model.adapter import Adapter
from recfound.model.state import save_adapter
from recfound.train.engine import full_trainable_state
from recfound.train.manifest import write_manifest, written_by
from recfound.run_layout import ADAPTER_FILE, OPTIMIZER_FILE, PROGRESS_FILE, SCHEDULER_FILE, ZERO_DIR
from recfound.train import optimizer_state
from recfound.train.unpickling import restricted_loads

ZERO_TAG = "state"


@dataclass
class LoopState:
    """The loop's position: the last finished step, bad-step counters, each kind's mixer position."""

    step: int = 0
    bad_steps: int = 0
    bad_in_a_row: int = 0
    mixers: dict[str, Any] = field(default_factory=dict)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one rank's step (dropout masks), independent of what ran before."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=1).encode())


def save_checkpoint(folder: Path, engine: Any, adapter: Adapter, state: LoopState,
                    scheduler_state: dict | None, rank: int, world_size: int) -> None:
    """Write this rank's part of a checkpoint into `folder` (every rank calls it; see module doc), its
    manifest last."""
    engine.save_checkpoint(str(folder / ZERO_DIR), tag=ZERO_TAG, save_latest=False, exclude_frozen_parameters=True)
    tensors = full_trainable_state(engine, adapter)
    moments = optimizer_state.full_optimizer_state(engine, adapter, keep=rank == 0) \
        if optimizer_state.supported(engine) else None
    if rank == 0:
        save_adapter(adapter, folder / ADAPTER_FILE, tensors)
        if moments is not None:
            optimizer_state.save_optimizer_state(folder / OPTIMIZER_FILE, *moments)
        _write_json(folder / PROGRESS_FILE, asdict(state))
        _write_json(folder / SCHEDULER_FILE, scheduler_state)
    write_manifest(folder, rank, world_size)


def load_checkpoint(folder: Path, engine: Any, adapter: Adapter, world_size: int) -> tuple[LoopState, dict]:
    """Restore the engine (adapter tensors, optimizer) from `folder`, written by this number of ranks
    (DeepSpeed's own checkpoint) or another (`optimizer.safetensors`); returns the loop's state and the
    scheduler state saved with it."""
    ranks = written_by(str(folder))
    if ranks == world_size:
        with restricted_loads(engine):  # no unpickling of what a run folder holds
            path, _ = engine.load_checkpoint(str(folder / ZERO_DIR), tag=ZERO_TAG, load_module_strict=False)
        if path is None:
            raise FileNotFoundError(f"{folder / ZERO_DIR}: no DeepSpeed checkpoint '{ZERO_TAG}' to resume from")
    elif optimizer_state.supported(engine) and (folder / OPTIMIZER_FILE).is_file():
        optimizer_state.load_into_engine(engine, adapter, folder / ADAPTER_FILE, folder / OPTIMIZER_FILE)
    else:
        raise ValueError(f"{folder.name} was written by {ranks} worker(s) and cannot resume on {world_size}: "
                         f"only ZeRO stages 1 and 2 checkpoints with {OPTIMIZER_FILE} move to another number of "
                         f"workers; set train.num_workers={ranks}")
    state = LoopState(**json.loads((folder / PROGRESS_FILE).read_text()))
    return state, json.loads((folder / SCHEDULER_FILE).read_text())

