"""DeepSpeed's checkpoint files read without running code: `torch.load(weights_only=True)`.

DeepSpeed saves its ZeRO checkpoint (`zero/*.pt`) with `torch.save` and loads it with
`torch.load(weights_only=False)`, a full unpickler: a `.pt` file planted in a run folder would run
its code in every worker that resumes from it (on shared storage, every worker of every node). Here
the engine's checkpoint engine is wrapped so that its loads use torch's restricted unpickler, which
builds tensors, containers and numbers, plus the few DeepSpeed classes its checkpoints hold
(`ALLOWED`); anything else is refused with the file named.
"""

from __future__ import annotations

import importlib
import pickle
import re
from contextlib import contextmanager
from typing import Any, Iterator

# The non-builtin types DeepSpeed 0.19's ZeRO-1/2/3 checkpoints (fp32 and bf16) hold, as module:name;
# tests/test_train_deepspeed.py loads every file of a checkpoint of each kind with exactly these.
ALLOWED = (
    "deepspeed.runtime.zero.config:ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler:LossScaler",
    "deepspeed.runtime.fp16.loss_scaler:DynamicLossScaler",
    "deepspeed.utils.tensor_fragment:fragment_address",
)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint file holds something other than tensors, numbers and DeepSpeed's state classes."""


def allowed_globals() -> list[Any]:
    """The classes of `ALLOWED`, imported."""
    found = []
    for entry in ALLOWED:
        module, name = entry.split(":")
        found.append(getattr(importlib.import_module(module), name))
    return found


def load_restricted(path: str, map_location: Any = None) -> Any:
    """`torch.load` of `path` with the restricted unpickler and `ALLOWED`; UnsafeCheckpointError otherwise."""
    import torch

    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+) was not an allowed global", str(error))
        reason = f"it would call {refused.group(1)}" if refused else "it is not a torch weights file"
        raise UnsafeCheckpointError(f"{path}: refused to load: it holds more than tensors and DeepSpeed's state "
                                    f"({reason}); recfound never writes such a file: was it replaced?") from None


class RestrictedLoads:
    """A DeepSpeed checkpoint engine whose `load` is `load_restricted`; everything else is the wrapped one's."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def load(self, path: str, map_location: Any = None) -> Any:
        return load_restricted(path, map_location)


@contextmanager
def restricted_loads(engine: Any) -> Iterator[None]:
    """For the block, the DeepSpeed engine reads checkpoint files with `load_restricted`."""
    inner = engine.checkpoint_engine
    engine.checkpoint_engine = RestrictedLoads(inner)
    try:
        yield
    finally:
        engine.checkpoint_engine = inner
