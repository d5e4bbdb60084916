"""GGUF checkpoints converted once to a safetensors model folder in the cache (reloads in ~0.1 s).

Llama-architecture files (SmolLM2 among them) are converted here, in one pass over the file: the `gguf`
package dequantizes each tensor, llama.cpp's tensor names map to transformers' Llama names, and the q
and k rows go back from the order llama.cpp's converter stores them in (its `permute`, undone). That
takes ~3 s for SmolLM2-135M where transformers' GGUF loader takes ~30 s (it parses the file twice).
Files of other architectures, or Llama files with tensors or settings this mapping does not know (e.g.
rope scaling), go through transformers' loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from recfound.data.atomic import atomic_folder
from recfound.data.tokenizer import gguf_cache_folder

# llama.cpp's names of a Llama block's tensors -> transformers' (module paths under model.layers.<i>).
LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
GLOBAL_TENSORS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output.weight": "lm_head.weight"}


def gguf_model_folder(gguf: Path, cache_dir: Path) -> Path:
    """A HF model folder holding the dequantized weights of `gguf`, converted on first use."""
    folder = gguf_cache_folder(gguf, cache_dir, "models")
    if (folder / "config.json").is_file():
        return folder
    with atomic_folder(folder, "config.json") as staging:
        if not _convert_llama(gguf, staging):
            _convert_with_transformers(gguf, staging)
    return folder


def _convert_llama(gguf: Path, out: Path) -> bool:
    """Write config.json and model.safetensors of a Llama GGUF into `out`; False (nothing written) when
    the file is not one this mapping covers whole."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.ggml.")
              or name.endswith("_token_id")}
    names = {tensor.name: _hf_name(tensor.name) for tensor in reader.tensors}
    if fields.get("general.architecture") != "llama" or None in names.values() or \
            any(key.startswith("llama.rope.scaling") for key in fields):
        return False
    config = _llama_config(fields, reader, tied="output.weight" not in names)
    tensors = {names[tensor.name]: _dequantized(tensor, config) for tensor in reader.tensors}
    from safetensors.numpy import save_file

    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return True


def _hf_name(name: str) -> str | None:
    """The transformers Llama name of a llama.cpp tensor name; None for one the mapping does not know."""
    if name in GLOBAL_TENSORS:
        return GLOBAL_TENSORS[name]
    parts = name.split(".")
    # Weights only: a Llama with biases (attention_bias, mlp_bias) goes through transformers' loader.
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in LAYER_TENSORS \
            and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{LAYER_TENSORS[parts[2]]}.{parts[3]}"
    return None


def _llama_config(fields: dict[str, Any], reader: Any, tied: bool) -> dict[str, Any]:
    """transformers' LlamaConfig fields from the GGUF metadata (the keys llama.cpp's converter writes)."""
    heads = int(fields["llama.attention.head_count"])
    hidden = int(fields["llama.embedding_length"])
    embedding = next(tensor for tensor in reader.tensors if tensor.name == "token_embd.weight")
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": int(fields.get("llama.vocab_size", embedding.shape[-1])),
        "hidden_size": hidden, "intermediate_size": int(fields["llama.feed_forward_length"]),
        "num_hidden_layers": int(fields["llama.block_count"]), "num_attention_heads": heads,
        "num_key_value_heads": int(fields.get("llama.attention.head_count_kv", heads)),
        "head_dim": int(fields.get("llama.attention.key_length", hidden // heads)),
        "max_position_embeddings": int(fields["llama.context_length"]),
        "rms_norm_eps": float(fields["llama.attention.layer_norm_rms_epsilon"]),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(fields.get("llama.rope.freq_base", 10000.0))},
        "tie_word_embeddings": tied, "attention_bias": False, "mlp_bias": False,
    }
    for token in ("bos", "eos", "unknown", "padding"):
        key = f"tokenizer.ggml.{token}_token_id"
        if key in fields:
            config[{"unknown": "unk", "padding": "pad"}.get(token, token) + "_token_id"] = int(fields[key])
    return config


def _dequantized(tensor: Any, config: dict[str, Any]) -> np.ndarray:
    """One tensor as float32 in transformers' shape (GGUF lists dimensions innermost first); q and k rows
    back in transformers' order."""
    from gguf.quants import dequantize

    weights = np.ascontiguousarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    weights = weights.reshape([int(size) for size in reversed(tensor.shape)])
    kind = tensor.name.split(".")[2] if tensor.name.startswith("blk.") else ""
    if kind == "attn_q":
        weights = _unpermute(weights, config["num_attention_heads"])
    elif kind == "attn_k":
        weights = _unpermute(weights, config["num_key_value_heads"])
    return np.ascontiguousarray(weights)


def _unpermute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k rows: it interleaves each head's two rotary halves."""
    return weights.reshape(heads, weights.shape[0] // heads // 2, 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def _convert_with_transformers(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantized; without the GGUF quantizer attached save_pretrained accepts the model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
