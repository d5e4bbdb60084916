"""Named backbone presets built from a config with random weights (tests, the CPU demo, benchmarks)."""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # A 2-layer Llama: with a corpus-built 1-2k vocabulary a 32x128 fwd+bwd takes well under a second on 2 cores.
    # Weights drawn with std 0.1, not transformers' 0.02: the frozen tied embeddings bound every logit by
    # |row| * |final hidden| (about 0.02 * d), so at 0.02 no adapter could move a token's log-probability far
    # from uniform (the generative loss stalled near log(vocab)); at 0.1 confident answers are reachable.
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
                 initializer_range=0.1),
}


def preset_config(name: str, vocab_size: int, pad_id: int = 0, eos_id: int = 0):
    """A transformers LlamaConfig for a named preset and a tokenizer's vocabulary."""
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return LlamaConfig(vocab_size=vocab_size, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=eos_id,
                       **PRESETS[name])


def build_preset(name: str, vocab_size: int, pad_id: int = 0, eos_id: int = 0, seed: int = 0, **options):
    """A randomly initialised causal LM for a preset (deterministic from `seed`); `options` go to
    `from_config` (e.g. dtype, attn_implementation)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):  # seed the weights without resetting the caller's RNG
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(preset_config(name, vocab_size, pad_id, eos_id), **options)
