"""Backbone loading: a preset, a local HF folder and the SmolLM2 GGUF go through one path; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recfound.data.tokenizer import TokenizerInfo, load_tokenizer, resolve_tokenizer
from recfound.model.adapter import AdapterConfig
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone

INFO = TokenizerInfo("corpus", vocab_size=300, pad_id=0, eos_id=3, embed_id=4)


def test_preset_is_frozen_deterministic_and_configurable():
    first, second = (load_backbone("tiny", INFO, seed=7) for _ in range(2))
    assert first.base_id == "tiny" and first.base_vocab == INFO.vocab_size
    assert all(not p.requires_grad for p in first.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), second.model.parameters()))
    double = load_backbone("tiny", INFO, dtype="float64", attn_implementation="eager")
    assert double.model.dtype == torch.float64 and double.model.config._attn_implementation == "eager"


def test_loading_a_backbone_keeps_attention_off_cudnn():
    """cuDNN's SDPA builds a graph for every new shape (a padded batch is nearly always one); flash and
    memory-efficient attention stay on. The switch is the process's, so it is put back afterwards."""
    backends = torch.backends.cuda
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        load_backbone("tiny", INFO)
        assert not backends.cudnn_sdp_enabled()
        assert backends.flash_sdp_enabled() and backends.mem_efficient_sdp_enabled() and backends.math_sdp_enabled()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)


def test_local_folder_loads_through_the_same_path_and_grows_the_vocabulary(tmp_path):
    saved = load_backbone("tiny", INFO, seed=3)
    saved.model.save_pretrained(tmp_path / "tiny-hf")
    bigger = TokenizerInfo("corpus", vocab_size=INFO.vocab_size + 2, pad_id=0, eos_id=3, embed_id=INFO.vocab_size + 1)
    loaded = load_backbone(tmp_path / "tiny-hf", bigger)
    embedding = loaded.model.get_input_embeddings().weight
    assert loaded.base_id == "tiny-hf" and loaded.base_vocab == INFO.vocab_size
    assert embedding.shape[0] == bigger.vocab_size
    assert torch.equal(embedding[:INFO.vocab_size], saved.model.get_input_embeddings().weight)
    assert torch.allclose(embedding[-1], embedding[:INFO.vocab_size].mean(0))
    adapter = attach_adapter(loaded, AdapterConfig(rank=2, task_dim=8, router_hidden=8), token_ids=[bigger.embed_id])
    assert adapter.token_rows.ids.tolist() == [INFO.vocab_size, INFO.vocab_size + 1]


def test_a_folder_in_a_bucket_loads_as_the_same_folder_on_disk(tmp_path, object_store):
    """A worker on any node reads a run's pre-trained backbone/ from the run folder's bucket."""
    from recfound import storage

    saved = load_backbone("tiny", INFO, seed=5)
    saved.model.save_pretrained(tmp_path / "backbone")
    storage.upload(tmp_path / "backbone", f"{object_store}/backbones/run/backbone", last="config.json")
    remote = load_backbone(f"{object_store}/backbones/run/backbone", INFO)
    assert remote.base_id == "backbone" and remote.base_vocab == INFO.vocab_size
    assert all(torch.equal(a, b) for a, b in zip(remote.model.parameters(), saved.model.parameters()))
    with pytest.raises(ValueError, match=r"s3://\S+/model\.gguf: a GGUF file is read from a local path"):
        load_backbone(f"{object_store}/backbones/model.gguf", INFO)


def test_missing_path_and_projectionless_model_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder.*tiny"):
        load_backbone(tmp_path / "absent", INFO)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_backbone(tmp_path / "empty", INFO)
    with pytest.raises(ValueError, match=r"no Linear projections named query.*named: .*down_proj.*q_proj"):
        attach_adapter(load_backbone("tiny", INFO), AdapterConfig(targets=("query",), task_dim=8, router_hidden=8))


def _gguf_name(hf_name: str) -> str:
    """The GGUF tensor name of a Llama parameter (llama.cpp's tensor map)."""
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, _ = rest.rsplit(".", 1)
    return f"blk.{layer}.{parts[module]}.weight"


def _llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`: the row order GGUF stores q and k in."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def test_smollm2_gguf_converts_once_then_reloads_fast(smollm2_cache):
    import gguf

    from recfound.data.tokenizer import smollm2_gguf

    _, info = load_tokenizer(resolve_tokenizer("smollm2", smollm2_cache))
    first = load_backbone("smollm2", info, cache_dir=smollm2_cache)
    (converted,) = (smollm2_cache / "models").iterdir()
    written = {f.name: f.stat().st_mtime_ns for f in converted.iterdir()}
    again = load_backbone("smollm2", info, cache_dir=smollm2_cache)
    assert {f.name: f.stat().st_mtime_ns for f in converted.iterdir()} == written  # reused, not converted again
    assert first.base_vocab == 49152 and info.embed_id == 49152
    assert all(torch.equal(a, b) for a, b in zip(first.model.parameters(), again.model.parameters()))
    # The weights are the GGUF tensors dequantized by the gguf package itself (q and k in llama.cpp's row
    # order): the embedding, the final norm and every tensor of the first and the last layer.
    stored = {tensor.name: tensor for tensor in gguf.GGUFReader(smollm2_gguf()).tensors}
    config = again.model.config
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}
    layers = {"0", str(config.num_hidden_layers - 1)}
    checked = [(name, p) for name, p in again.model.named_parameters()
               if not name.startswith("model.layers.") or name.split(".")[2] in layers]
    assert {_gguf_name(name) for name, _ in again.model.named_parameters()} == set(stored)  # tied output head
    for name, parameter in checked:
        tensor = stored[_gguf_name(name)]
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        actual = parameter.detach().numpy()
        if name == "model.embed_tokens.weight":
            actual = actual[:len(expected)]  # the rows after the GGUF vocabulary are our added tokens
        kind = tensor.name.split(".")[-2]
        if kind in heads:
            actual = _llama_cpp_permute(actual, heads[kind])
        np.testing.assert_array_equal(actual, expected.reshape(actual.shape), err_msg=name)
    assert len(checked) == 2 + 2 * 9
    # SmolLM2-135M's published config (its model card's config.json), read from the GGUF metadata.
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (576, 1536, 30)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert config.rope_parameters["rope_theta"] == 100000.0 and config.rms_norm_eps == pytest.approx(1e-5)
    assert config.tie_word_embeddings and config.max_position_embeddings == 8192
    ids = torch.tensor([[info.embed_id, 504, 3458, 314]])
    with torch.no_grad():
        logits = again.model(input_ids=ids).logits
    assert logits.shape == (1, 4, info.vocab_size) and torch.isfinite(logits).all()


def test_a_llama_written_as_gguf_converts_back_to_the_same_model(tmp_path):
    """A small random Llama (untied output head, grouped kv heads) written as a float32 GGUF the way
    llama.cpp's converter writes one (its names, q/k permuted), converted and loaded: same logits."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 5000.0},
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=3, pad_token_id=0)
    torch.manual_seed(0)
    original = LlamaForCausalLM(config).eval()
    path = tmp_path / "small.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(48)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(5000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(3)
    writer.add_pad_token_id(0)
    heads = {"attn_q": 4, "attn_k": 2}
    for name, parameter in original.state_dict().items():
        gguf_name = "output.weight" if name == "lm_head.weight" else _gguf_name(name)
        weights = parameter.numpy()
        kind = gguf_name.split(".")[-2]
        if kind in heads:
            weights = _llama_cpp_permute(weights, heads[kind])
        writer.add_tensor(gguf_name, np.ascontiguousarray(weights))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = TokenizerInfo("corpus", vocab_size=300, pad_id=0, eos_id=3, embed_id=4)
    converted = load_backbone(path, info, cache_dir=tmp_path / "cache").model
    assert not converted.config.tie_word_embeddings and converted.config.num_key_value_heads == 2
    ids = torch.tensor([[1, 17, 250, 42, 9, 3]])
    with torch.no_grad():
        np.testing.assert_allclose(converted(input_ids=ids).logits.numpy(), original(input_ids=ids).logits.numpy(),
                                   rtol=1e-5, atol=1e-5)
