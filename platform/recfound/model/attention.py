"""Attention mode per forward: bidirectional (non-causal) attention for embedding inputs, causal otherwise.

`with bidirectional(model): model(...)` runs an HF transformers (v5) causal LM with every non-pad token
attending to every non-pad token; outside the block the model is its ordinary causal self. Nothing
in the installed libraries is patched. The block adds transformers' own `is_causal=False` keyword
(`TransformersKwargs.is_causal`: "use decoder attention modules as encoders") to every forward of the
base transformer, through a forward pre-hook removed on exit. transformers then

- mirrors it into `config.is_causal` for the duration of that forward (`merge_with_config_defaults`),
  so `create_causal_mask` builds the bidirectional padding mask in the format of the configured
  attention implementation (float for eager, bool for SDPA, 2D for flash, BlockMask for flex), and
- passes it on through every layer to the attention function, where SDPA and flash attention prefer
  it to the module's `is_causal` flag (needed when the mask was skipped because there is no padding).

Being a layer argument, the keyword is also captured by gradient checkpointing, so a backward pass
run after the block recomputes the layers non-causally too (flipping attention modules' `is_causal`
attributes would not be). Llama, Mistral and Qwen2/3 decoders take the keyword; older models whose
attention passes `is_causal=` itself (e.g. GPT-J, Falcon) fail loudly with a duplicate-keyword error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def decoder_of(model: nn.Module) -> nn.Module:
    """The base transformer of an HF causal LM (or of a wrapper that forwards attributes, e.g. peft)."""
    get_decoder = getattr(model, "get_decoder", None)
    if get_decoder is None:
        raise ValueError(f"model: {type(model).__name__} is not a transformers model (it has no get_decoder())")
    return get_decoder()


def _non_causal(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return args, {**kwargs, "is_causal": False}


@contextmanager
def bidirectional(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model's forwards inside the block with bidirectional attention over non-pad tokens."""
    handle = decoder_of(model).register_forward_pre_hook(_non_causal, with_kwargs=True)
    try:
        yield model
    finally:
        handle.remove()


def without_cudnn_attention() -> None:
    """Keep PyTorch's SDPA off its cuDNN backend in this process; flash and memory-efficient attention remain.

    On Hopper GPUs cuDNN is SDPA's first choice, and it builds an execution graph for every new input shape
    (hundreds of milliseconds each, cached per shape). Our batches are padded to their longest row, so nearly
    every batch is a new shape: on an H200, SmolLM2-135M training steps took 4.5 s and encoding took 2 s per
    32 documents, where one repeated shape took 72 ms (docs/benchmarks.md, "GPU numbers"). No effect on CPUs.
    """
    torch.backends.cuda.enable_cudnn_sdp(False)
