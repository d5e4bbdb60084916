"""Backbone loading: a named preset (random weights), a local HF folder or a GGUF file, one code path.

Every source ends as a transformers causal LM with the requested dtype and attention implementation,
its embeddings resized to the tokenizer (so `<embed>` has a row) and every weight frozen; adapters
(`recfound.model.adapter`) add the trainable parts.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from recfound import storage
from recfound.data.tokenizer import SMOLLM2, TokenizerInfo, default_cache_dir, smollm2_gguf
from recfound.model.attention import without_cudnn_attention
from recfound.model.gguf import gguf_model_folder
from recfound.model.presets import PRESETS, build_preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass
class Backbone:
    """A loaded, frozen causal LM; `base_vocab` is its vocabulary before resizing to the tokenizer."""

    model: torch.nn.Module
    base_id: str
    base_vocab: int


def load_backbone(spec: str | Path, tokenizer: TokenizerInfo, dtype: str | torch.dtype = "float32",
                  attn_implementation: str = "sdpa", cache_dir: Path | None = None, seed: int = 0) -> Backbone:
    """Load `spec`: a preset name (e.g. 'tiny', built for the tokenizer's vocabulary from `seed`),
    'smollm2', a .gguf file, or a HF model folder (local, or a URI: downloaded for the load). fp32 + SDPA
    suit CPUs; bf16 + 'sdpa' or 'flash_attention_2' suit GPUs (SDPA without its cuDNN backend, see
    `without_cudnn_attention`: the process's setting, made here since every model we run is loaded here)."""
    without_cudnn_attention()
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} (or a torch.dtype), got {dtype!r}")
        dtype = DTYPES[dtype]
    options = dict(dtype=dtype, attn_implementation=attn_implementation)
    if str(spec) in PRESETS:
        model = build_preset(str(spec), tokenizer.vocab_size, tokenizer.pad_id, tokenizer.eos_id, seed, **options)
    elif storage.is_remote(spec):  # e.g. a run's pre-trained backbone/ in a bucket, read by a worker on any node
        if str(spec).endswith(".gguf"):
            raise ValueError(f"{spec}: a GGUF file is read from a local path; copy it to the machine first")
        with tempfile.TemporaryDirectory(prefix="recfound-backbone-") as local:
            model = _from_folder(storage.download(spec, Path(local) / "backbone"), options)
    else:
        model = _from_folder(_model_folder(spec, cache_dir), options)
    base_vocab = model.get_input_embeddings().num_embeddings
    _fit_vocabulary(model, tokenizer.vocab_size)
    model.requires_grad_(False)
    model.eval()  # dropout-free until the training loop says otherwise
    named = str(spec) in PRESETS or str(spec) == SMOLLM2
    return Backbone(model, str(spec) if named else storage.basename(spec), base_vocab)


def _from_folder(folder: Path, options: dict) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), **options)


def portable_spec(spec: str) -> str:
    """`spec` as any process can read it: a backbone given as a relative path (workers do not run in the
    caller's directory) made absolute; presets and names unchanged."""
    path = Path(spec)
    return str(path.resolve()) if path.exists() and not path.is_absolute() else spec


def _model_folder(spec: str | Path, cache_dir: Path | None) -> Path:
    path = smollm2_gguf() if str(spec) == SMOLLM2 else Path(spec)
    if path.suffix == ".gguf":
        return gguf_model_folder(path, cache_dir or default_cache_dir())
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model folder or file (or a preset: {', '.join(PRESETS)}; "
                                f"or '{SMOLLM2}')")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a HF model folder (no config.json) and not a .gguf file")
    return path


def _fit_vocabulary(model: torch.nn.Module, vocab_size: int) -> None:
    """Grow the embeddings to the tokenizer's size; new rows start at the mean row (deterministic,
    unlike transformers' sampled mean resizing, so the base fingerprint is stable across loads)."""
    old = model.get_input_embeddings().num_embeddings
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    with torch.no_grad():
        for module in {model.get_input_embeddings(), model.get_output_embeddings()}:
            if module is not None:
                module.weight[old:] = module.weight[:old].mean(0, dtype=torch.float32).to(module.weight.dtype)


def find_projections(model: torch.nn.Module, targets: tuple[str, ...]) -> list[str]:
    """Qualified names of the nn.Linear modules whose last name part is one of `targets`; a clear
    error listing the Linear names the model does have when none match."""
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    found = [name for name in linears if name.rsplit(".", 1)[-1] in targets]
    if not found:
        names = sorted({name.rsplit(".", 1)[-1] for name in linears})
        raise ValueError(f"the model has no Linear projections named {', '.join(targets)} to wrap; "
                         f"its Linear modules are named: {', '.join(names) or '(none)'}")
    return found
