"""The models the GPU suite runs: a loaded backbone (SmolLM2, or a preset in a dry run) or a randomly
initialised one built from a config (the Mistral-7B shape), with our TMoLE adapter attached."""

from __future__ import annotations

import torch
from torch import nn

from recfound.data.tokenizer import TokenizerInfo
from recfound.model.adapter import Adapter, AdapterConfig
from recfound.model.attach import attach_adapter
from recfound.model.attention import without_cudnn_attention
from recfound.model.backbone import Backbone, load_backbone

# Mistral-7B's shape (v0.1 vocabulary; no sliding window, as from v0.2 on, which does not matter up to 4k tokens).
MISTRAL_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768,
                  sliding_window=None, tie_word_embeddings=False)


def mistral_7b_config():
    from transformers import MistralConfig

    return MistralConfig(**MISTRAL_7B)


def loaded_backbone(spec: str, tokenizer: TokenizerInfo, dtype: torch.dtype, device: torch.device) -> Backbone:
    """`spec` (a preset, 'smollm2', a .gguf file or a HF folder) as our trainer loads it, on `device`."""
    backbone = load_backbone(spec, tokenizer, dtype=dtype, attn_implementation="sdpa")
    backbone.model.to(device)
    return backbone


def random_backbone(config, dtype: torch.dtype, device: torch.device, name: str) -> Backbone:
    """A frozen causal LM of a transformers `config` with random weights, initialised on `device`
    (a 7B model initialised on the CPU first would take minutes)."""
    from transformers import AutoModelForCausalLM

    without_cudnn_attention()  # as load_backbone, which every model of a real run comes through
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.requires_grad_(False)
    return Backbone(model.eval(), name, config.vocab_size)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def with_adapter(backbone: Backbone, embed_id: int, checkpointing: bool) -> Adapter:
    """The backbone with the paper's TMoLE adapter (E=S=G=2, r=16 on q/k/v/o), in training mode, as a
    training worker builds it; `checkpointing`: activation checkpointing of every decoder layer."""
    torch.manual_seed(0)
    adapter = attach_adapter(backbone, AdapterConfig(), token_ids=[embed_id])
    if checkpointing:
        adapter.enable_checkpointing()
    return adapter.train()
