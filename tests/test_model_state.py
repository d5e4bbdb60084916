"""Adapter state (save/load, refusals), the dense per-task export, plain LoRA mode and the routing report."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM

from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.routing import mean_gates, plot_routing_similarity, routing_figure, routing_report
from recfound.model.state import export_dense, load_adapter, read_adapter, save_adapter
from recfound.tasks import task_index
from test_model_tmole import INFO, randomise, small_config, tiny_adapter

MODES = ["tmole", "lora"]


def batch(names: list[str]) -> tuple[torch.Tensor, list[int]]:
    torch.manual_seed(5)
    ids = torch.randint(5, INFO.vocab_size, (len(names), 10))
    ids[:, 0] = INFO.embed_id
    return ids, [task_index(n) for n in names]


def logits(adapter, names: list[str]) -> torch.Tensor:
    ids, task_ids = batch(names)
    with torch.no_grad():
        return adapter(input_ids=ids, task_ids=task_ids).logits


@pytest.mark.parametrize("mode", MODES)
def test_save_load_round_trip_is_bit_exact(tmp_path, mode):
    _, adapter = tiny_adapter(mode=mode)
    randomise(adapter)
    adapter.eval()
    path = save_adapter(adapter, tmp_path / "adapter.safetensors")
    header, tensors = read_adapter(path)
    assert header["config"]["mode"] == mode and header["tasks"][0] == "U2I" and header["token_ids"] == [INFO.embed_id]
    assert set(tensors) == set(adapter.trainable_state())
    _, fresh = tiny_adapter(mode=mode)
    load_adapter(fresh, path)
    fresh.eval()
    for names in (["QR", "SA"], ["U2I", "I2I"]):
        assert torch.equal(logits(fresh, names), logits(adapter, names))
    assert not list(tmp_path.glob(".*tmp"))


def test_loading_refuses_another_base_or_config(tmp_path):
    _, adapter = tiny_adapter()
    path = save_adapter(adapter, tmp_path / "adapter.safetensors")
    _, other_base = tiny_adapter(seed=1)
    with pytest.raises(ValueError, match="trained on base 'tiny' .*fingerprint"):
        load_adapter(other_base, path)
    backbone = load_backbone("tiny", INFO, dtype="float64")
    other_config = attach_adapter(backbone, small_config((2, 1, 2)), token_ids=[INFO.embed_id])
    with pytest.raises(ValueError, match="config differs: shared_experts: file 2 vs model 1"):
        load_adapter(other_config, path)
    _, lora = tiny_adapter(mode="lora")
    with pytest.raises(ValueError, match="mode: file 'tmole' vs model 'lora'"):
        load_adapter(lora, path)
    backbone = load_backbone("tiny", INFO, dtype="float64")
    other_rows = attach_adapter(backbone, small_config(), token_ids=[INFO.embed_id, 7])
    with pytest.raises(ValueError, match=r"token_ids differ: file \[4\] vs model \[4, 7\]"):
        load_adapter(other_rows, path)



def test_a_file_from_before_a_config_key_existed_loads_with_that_keys_default(tmp_path):
    """An adapter written before `dropout_per_expert` existed (its header lacks the key) trained without it:
    it loads into a model at the default, and is refused by one that sets the key."""
    from safetensors.torch import save

    from recfound.model.state import HEADER_KEY

    _, adapter = tiny_adapter()
    randomise(adapter)
    header, tensors = read_adapter(save_adapter(adapter, tmp_path / "new.safetensors"))
    del header["config"]["dropout_per_expert"]
    old = tmp_path / "old.safetensors"
    old.write_bytes(save(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    _, fresh = tiny_adapter()
    load_adapter(fresh, old)
    assert all(torch.equal(fresh.trainable_state()[name], tensor) for name, tensor in tensors.items())
    backbone = load_backbone("tiny", INFO, dtype="float64")
    per_expert = attach_adapter(backbone, small_config(dropout_per_expert=True), token_ids=[INFO.embed_id])
    with pytest.raises(ValueError, match="dropout_per_expert: file False vs model True"):
        load_adapter(per_expert, old)

def test_a_damaged_adapter_file_is_one_error_naming_it(tmp_path):
    from safetensors.torch import save_file

    from recfound.model.state import HEADER_KEY

    _, adapter = tiny_adapter()
    path = save_adapter(adapter, tmp_path / "adapter.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{re.escape(str(truncated))}: not a readable safetensors file .*truncated"):
        read_adapter(truncated)
    header, tensors = read_adapter(path)
    for name, text, reason in (("nested", "[" * 100_000 + "]" * 100_000, "is not valid JSON"),
                               ("list", json.dumps([header]), "is a JSON list, not an object"),
                               ("keys", json.dumps({**header, "tasks": "U2I", "base_id": None}),
                                "lacks or mistypes tasks, base_id")):
        bad = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(bad), metadata={HEADER_KEY: text})
        with pytest.raises(ValueError, match=rf"{re.escape(str(bad))}: the '{HEADER_KEY}' header {reason}"):
            read_adapter(bad)
    diverged = tmp_path / "nan.safetensors"
    first = next(iter(tensors))
    save_file({**tensors, first: torch.full_like(tensors[first], float("nan"))}, str(diverged),
              metadata={HEADER_KEY: json.dumps(header)})
    with pytest.raises(ValueError, match=rf"{re.escape(str(diverged))}: 1 tensor\(s\) hold NaN or infinite values \(e.g. {first}\)"):
        read_adapter(diverged)


@pytest.mark.parametrize("mode", MODES)
def test_dense_export_matches_the_adapter_for_its_task(tmp_path, mode):
    _, adapter = tiny_adapter(mode=mode)
    randomise(adapter)
    adapter.eval()
    before = logits(adapter, ["SA", "SA"])
    for task, names in (("SA", ["SA", "SA"]), ("Q2I", ["Q2I", "Q2I"])):
        folder = export_dense(adapter, task, tmp_path / task)
        dense = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64)
        ids, _ = batch(names)
        with torch.no_grad():
            expected = logits(adapter, names)
            got = dense(input_ids=ids).logits
        assert torch.allclose(got, expected, rtol=0, atol=1e-10), (got - expected).abs().max()
    assert len(adapter.projections()) == 8 and torch.equal(logits(adapter, ["SA", "SA"]), before)  # left as it was


def test_lora_mode_has_the_same_interface():
    _, adapter = tiny_adapter(mode="lora")
    names = set(adapter.trainable_state())
    assert names and all("lora_" in n or n == "token_rows.rows" for n in names)
    assert adapter.set_tasks([task_index("QR")]).value == "generative"
    with pytest.raises(ValueError, match="one kind"):
        adapter.set_tasks([task_index("QR"), task_index("U2I")])
    ids, _ = batch(["QR", "SA"])
    base = load_backbone("tiny", INFO, dtype="float64").model
    with torch.no_grad():
        hidden, base_hidden = adapter.model.model(input_ids=ids), base.model(input_ids=ids)
    assert torch.equal(hidden.last_hidden_state, base_hidden.last_hidden_state)
    with pytest.raises(TypeError, match="plain LoRA has no router"):
        routing_report(adapter)


def test_routing_report_and_heatmap(tmp_path):
    _, adapter = tiny_adapter()
    randomise(adapter)
    report = routing_report(adapter)
    json.dumps(report)
    tasks = report["tasks"]
    assert report["experts"] == ["E1", "E2", "S1", "S2", "G1", "G2"] and len(report["layers"]) == 8
    assert all(len(report["gates"][t]) == 8 and len(report["gates"][t][0]) == 6 for t in tasks)
    similarity = torch.tensor(report["similarity"], dtype=torch.float64)
    assert similarity.shape == (13, 13) and torch.allclose(similarity, similarity.T)
    assert torch.allclose(similarity.diagonal(), torch.ones(13, dtype=torch.float64))
    gates = {t: [g for layer in report["gates"][t] for g in layer] for t in tasks}  # over all projections
    u2i, qr, sa = gates["U2I"], gates["QR"], gates["SA"]
    cosine = sum(a * b for a, b in zip(qr, sa)) / (sum(a * a for a in qr) * sum(b * b for b in sa)) ** 0.5
    assert similarity[tasks.index("QR"), tasks.index("SA")].item() == pytest.approx(cosine, rel=1e-9)
    assert all(g == 0 for layer in report["gates"]["U2I"] for g in layer[4:])  # embedding tasks: no G experts
    assert all(sum(layer) == pytest.approx(1.0) for layer in report["gates"]["QR"]) and len(u2i) == 48
    plot_routing_similarity(report, tmp_path / "routing.png")
    assert (tmp_path / "routing.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_routing_figure_says_what_it_shows():
    _, adapter = tiny_adapter()
    randomise(adapter)
    report = routing_report(adapter)
    figure = routing_figure(report, title="demo: routing of the adapter after step 8")
    gate_panel, similarity_panel = figure.axes[:2]  # then their colour bars
    # Left: each task's gate per expert, averaged over the 8 projections (2 layers x q, k, v, o).
    expected = torch.stack([torch.stack(list(adapter.task_gates(t).values())).mean(0) for t in report["tasks"]])
    assert torch.allclose(torch.tensor(mean_gates(report), dtype=torch.float64), expected.double(), atol=1e-12)
    assert torch.allclose(torch.tensor(gate_panel.get_images()[0].get_array()), expected.double(), atol=1e-12)
    assert [t.get_text() for t in gate_panel.get_xticklabels()] == ["E1", "E2", "S1", "S2", "G1", "G2"]
    assert [t.get_text() for t in gate_panel.get_yticklabels()][:4] == ["U2I [E]", "Q2I [E]", "I2I [E]", "QR [G]"]
    assert gate_panel.get_xlabel() == "expert (E: embedding, S: shared, G: generative)"
    assert gate_panel.get_ylabel() == "task [E: embedding, G: generative]"
    assert gate_panel.get_images()[0].colorbar.ax.get_ylabel() == "mean gate (router softmax weight)"
    # Right: the task-by-task similarity (the paper's Figure 2).
    assert [t.get_text() for t in similarity_panel.get_xticklabels()] == report["tasks"]
    assert similarity_panel.get_xlabel() == similarity_panel.get_ylabel() == "task"
    assert similarity_panel.get_images()[0].colorbar.ax.get_ylabel() == "cosine similarity of the tasks' gates"
    title = figure.get_suptitle()
    assert title.startswith("demo: routing of the adapter after step 8\n")
    assert "averaged over the 8 TMoLE projections (q_proj, k_proj, v_proj, o_proj in 2 layers)" in title
