"""`recfound export`: one task's dense model as a plain HF folder that transformers loads, equal to the
adapter routed to that task, with normal permissions; refusals of unknown tasks and occupied folders."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recfound.cli import main
from recfound.config import RunConfig, save_config
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.state import save_adapter
from recfound.tasks import task_index, task_names
from recfound.tracking import default_artifact_root, log_and_register_adapter, start_run
from test_model_tmole import randomise
from test_tracking import TEXTS

NAME = "exportrun"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, the merged adapter in eval mode): a run folder as training leaves it (config.yaml,
    tokenizer/, adapter_init and merged adapters), the merged adapter random so that tasks differ."""
    root = tmp_path_factory.mktemp("export")
    config = RunConfig().with_overrides({"run.name": NAME, "run.output_dir": str(root), "tmole.rank": 4,
                                         "tmole.alpha": 8.0, "tmole.task_dim": 16, "tmole.router_hidden": 8})
    run_dir = root / NAME
    run_dir.mkdir()
    save_config(config, run_dir / "config.yaml")
    tokenizer = build_corpus_tokenizer(TEXTS * 20, run_dir / "tokenizer", vocab_size=300)
    _, info = load_tokenizer(tokenizer)
    torch.manual_seed(0)
    backbone = load_backbone("tiny", info, dtype=config.model.dtype, seed=config.run.seed)
    adapter = attach_adapter(backbone, config.adapter_config(), [info.embed_id])
    save_adapter(adapter, run_dir / "adapter_init.safetensors")
    randomise(adapter)
    save_adapter(adapter, run_dir / "merged.safetensors")
    return run_dir, adapter.eval()


def prompt_ids(tokenizer_dir) -> torch.Tensor:
    tokenizer, info = load_tokenizer(tokenizer_dir)
    ids = tokenizer.encode("Great shoes, they fit well. Answer:", add_special_tokens=False).ids
    return torch.tensor([[info.embed_id, *ids], [*ids, info.eos_id]])


def adapter_logits(adapter, task: str, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return adapter(input_ids=ids, task_ids=[task_index(task)] * len(ids)).logits


def modes(folder) -> set[int]:
    return {stat.S_IMODE(path.stat().st_mode) for path in folder.rglob("*") if path.is_file()}


def test_export_loads_in_transformers_and_equals_the_adapter_for_its_task(run, tmp_path, capsys):
    run_dir, adapter = run
    ids = prompt_ids(run_dir / "tokenizer")
    for task in ("SA", "Q2I"):
        out = tmp_path / task
        assert main(["export", str(run_dir), "--task", task, "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert f"exported {NAME}:merged for task {task} to {out}" in printed and "model.safetensors" in printed
        dense = AutoModelForCausalLM.from_pretrained(out).eval()
        with torch.no_grad():
            got = dense(input_ids=ids).logits
        expected = adapter_logits(adapter, task, ids)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()
        text = "Great shoes, they fit well."
        own, _ = load_tokenizer(run_dir / "tokenizer")
        assert AutoTokenizer.from_pretrained(out).encode(text, add_special_tokens=False) == own.encode(
            text, add_special_tokens=False).ids
        umask = os.umask(0)
        os.umask(umask)  # what plain mkdir and open give here: 0755 and 0644 under the usual umask 022
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask and modes(out) == {0o666 & ~umask}
    assert not torch.allclose(adapter_logits(adapter, "SA", ids), adapter_logits(adapter, "Q2I", ids), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_export_of_the_initial_adapter_and_of_a_registered_version(run, tmp_path, capsys):
    run_dir, _ = run
    init = tmp_path / "init"
    assert main(["export", f"{run_dir}:init", "--task", "SR", "--out", str(init)]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = start_run(uri, "export", "run", {"seed": 0}, artifact_root=default_artifact_root(tmp_path))
    log_and_register_adapter(uri, run_id, run_dir / "merged.safetensors", run_dir / "tokenizer", "tiny", 0,
                             "rf-export", {})
    registered = tmp_path / "registered"
    assert main(["export", "models:/rf-export/latest", "--task", "SR", "--out", str(registered),
                 "--tracking-uri", uri]) == 0
    assert main(["export", str(run_dir), "--task", "SR", "--out", str(tmp_path / "merged")]) == 0
    assert "exported rf-export/1 for task SR" in capsys.readouterr().out
    ids = prompt_ids(run_dir / "tokenizer")
    logits = {}
    for name in ("init", "registered", "merged"):
        with torch.no_grad():
            logits[name] = AutoModelForCausalLM.from_pretrained(tmp_path / name)(input_ids=ids).logits
    assert torch.equal(logits["registered"], logits["merged"])  # the registered version is the merged adapter
    base = load_backbone("tiny", load_tokenizer(run_dir / "tokenizer")[1], seed=0).model.eval()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    assert torch.allclose(logits["init"], base_logits, atol=1e-5)  # an untrained adapter changes nothing


def test_export_refuses_an_unknown_task_and_an_occupied_folder(run, tmp_path, capsys):
    run_dir, _ = run
    assert main(["export", str(run_dir), "--task", "XYZ", "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err == f"recfound: error: unknown task 'XYZ'; known tasks: {', '.join(task_names())}\n"
    assert not (tmp_path / "x").exists()
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    assert main(["export", str(run_dir), "--task", "SA", "--out", str(occupied)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"recfound: error: {occupied}: exists and is not empty") and "--overwrite" in err
    assert main(["export", str(run_dir), "--task", "SA", "--out", str(occupied), "--overwrite"]) == 1
    assert "not a folder written by this command" in capsys.readouterr().err  # --overwrite replaces exports only
    assert (occupied / "notes.txt").read_text() == "keep me"
    (occupied / "config.json").write_text("{}")  # a HF model folder, say: not an export either
    assert main(["export", str(run_dir), "--task", "SA", "--out", str(occupied), "--overwrite"]) == 1
    assert "not a folder written by this command (no recfound-export.json)" in capsys.readouterr().err
    assert sorted(p.name for p in occupied.iterdir()) == ["config.json", "notes.txt"]
    out = tmp_path / "out"
    assert main(["export", str(run_dir), "--task", "SA", "--out", str(out)]) == 0
    assert main(["export", str(run_dir), "--task", "SA", "--out", str(out)]) == 1
    assert main(["export", str(run_dir), "--task", "QR", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "recfound-export.json").read_text()) == {"task": "QR"}
    assert main(["export", "base:tiny", "--task", "SA", "--out", str(tmp_path / "base")]) == 1
    assert "bare backbone has no adapter" in capsys.readouterr().err
    # A file that is no adapter, and a checkpoint folder where its adapter file or the run folder belongs.
    assert main(["export", str(run_dir / "config.yaml"), "--task", "SA", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == (
        f"recfound: error: {run_dir / 'config.yaml'}: not an adapter file (a .safetensors file a run wrote); give "
        "one, a run folder, RUN:init|final|merged or models:/NAME/VERSION\n")
    copied = shutil.copytree(run_dir, tmp_path / "run")  # (the module's run folder stays as the other tests expect)
    checkpoint = copied / "checkpoint_000010"
    checkpoint.mkdir()
    shutil.copy(copied / "merged.safetensors", checkpoint / "adapter.safetensors")
    assert main(["export", str(checkpoint), "--task", "SA", "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err == (
        f"recfound: error: {checkpoint}: a checkpoint folder, not a run folder: give its adapter file "
        f"{checkpoint / 'adapter.safetensors'} (or the run folder above it)\n")
    assert main(["export", str(checkpoint / "adapter.safetensors"), "--task", "SA", "--out", str(tmp_path / "o")]) == 0


def test_an_export_stopped_by_sigterm_leaves_nothing_behind(run, tmp_path, capsys, monkeypatch):
    """A real SIGTERM, sent to this process while the export copies the tokenizer beside the weights, ends
    `recfound export` with one line and status 143 (128 + 15); neither its staging folder beside --out nor the
    model's temporary folder stays."""
    import signal
    import tempfile

    run_dir, _ = run
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    copy = shutil.copy2

    def copy_then_stop(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return copy(*args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy_then_stop)
    received = []  # without the command's own handler the signal lands here, not on the test process
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    out = tmp_path / "exports" / "sa"
    try:
        assert main(["export", str(run_dir), "--task", "SA", "--out", str(out)]) == 143
        # (transformers, imported by this test module before the command quietens it, shows its saving bar here)
        assert capsys.readouterr().err.splitlines()[-1] == "recfound: stopped by SIGTERM"
        assert list((tmp_path / "exports").iterdir()) == [] and list(temporary.iterdir()) == []
        assert received == []
    finally:
        signal.signal(signal.SIGTERM, previous)
