"""bench/gpu_suite.py: its dry run measures every part on the CPU, in a process that cannot import the
packages the GPU machine lacks (Ray, MLflow, DeepSpeed, ...); a real run on a machine without a GPU
stops at once with one line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "gpu_suite.py"
# Not on the GPU machine (gguf travels as a wheel for part (b) only; the dry run must not need it).
ABSENT = ("ray", "mlflow", "deepspeed", "boto3", "optuna", "gguf")
PARTS = ("tmole_layer", "smollm2_training", "evaluation", "attention_shapes", "mistral7b_training")
SHAPE_PASSES = ("distinct lengths, cuDNN attention allowed", "distinct lengths, cuDNN attention off",
                "one repeated length, cuDNN attention off")

# Runs a script as `python SCRIPT ARGS` would, with the ABSENT packages hidden from the import system
# (as if not installed: importlib.util.find_spec gives None, import raises ModuleNotFoundError).
WITHOUT_PACKAGES = """
import importlib.machinery, importlib.util, runpy, sys
from pathlib import Path
hidden, script, *args = sys.argv[1:]
hidden = set(hidden.split(","))
class Finder(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in hidden else super().find_spec(name, path, target)
sys.meta_path = [Finder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
assert all(importlib.util.find_spec(name) is None for name in hidden)
sys.path.insert(0, str(Path(script).parent))
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def run_suite(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform"), "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", WITHOUT_PACKAGES, ",".join(ABSENT), str(SUITE), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[dict, str, str, Path]:
    out = tmp_path_factory.mktemp("gpu-suite")
    done = run_suite("--dry-run", "--out", str(out), "--peak-tflops", "1", "--profile", timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu_suite.json").read_text()), (out / "gpu_suite.md").read_text(), done.stderr, out


def test_dry_run_runs_every_part_to_the_end(dry_run):
    report = dry_run[0]
    assert report["dry_run"] is True and report["device"]["kind"] == "cpu"
    assert tuple(report["parts"]) == PARTS
    for key, part in report["parts"].items():
        assert part["status"] == "ok" and part["cut_short"] is False, key
        assert 0 < part["elapsed_s"] <= part["budget_s"], key
    assert report["elapsed_s"] < report["suite_budget_s"]


def test_layer_part_times_every_variant(dry_run):
    layer = dry_run[0]["parts"]["tmole_layer"]
    assert set(layer["ms_fwd_bwd"]) == {"fused TMoLE", "per-expert loop", "peft LoRA", "frozen base only"}
    assert all(positive(ms) for ms in layer["ms_fwd_bwd"].values())
    assert layer["vs_peft_lora"]["peft LoRA"] == 1.0 and positive(layer["fused_vs_lora"])
    assert layer["rounds"] == layer["rounds_planned"] and layer["dim"] == 256


@pytest.mark.parametrize("key", ["smollm2_training", "mistral7b_training"])
def test_training_parts_measure_throughput_memory_and_losses(dry_run, key):
    part = dry_run[0]["parts"][key]
    assert part["steps"] == part["steps_planned"] > part["warmup_steps"]
    for name in ("tokens_per_s", "tokens_per_step", "step_seconds", "peak_memory_mib", "model_tflops_per_s", "mfu"):
        assert positive(part[name]), name
    assert part["backbone_params"] > 0
    assert part["mfu"] == pytest.approx(6 * part["backbone_params"] * part["tokens_per_s"] / 1e12)  # peak: 1 TFLOP/s
    losses = part["loss_embedding"] + part["loss_generative"]
    assert len(losses) == 2 * part["steps"] and all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize("key", ["smollm2_training", "mistral7b_training"])
def test_profile_tables_list_the_step_operators(dry_run, key):
    """--profile: one more step under the torch profiler, its operators by their own time, matrix products among
    the first (a dry run has no device: CPU time)."""
    report, _, _, out = dry_run
    assert report["parts"][key]["profile"] == f"profile_{key}.txt"
    lines = (out / f"profile_{key}.txt").read_text().splitlines()
    assert "Self CPU" in lines[1] and "# of Calls" in lines[1]
    operators = [line.split()[0] for line in lines[3:13]]
    assert any(name in ("aten::mm", "aten::addmm", "aten::bmm", "MmBackward0") for name in operators), operators


def test_training_loss_falls(dry_run):
    """Deterministic on the CPU: the tiny model at its demo learning rate learns within six steps."""
    for key in ("smollm2_training", "mistral7b_training"):
        part = dry_run[0]["parts"][key]
        assert part["loss_fell"] and part["last_loss"] < part["first_loss"], key


def test_evaluation_part_measures_generation_and_encoding(dry_run):
    part = dry_run[0]["parts"]["evaluation"]
    batched, single = part["generation"]
    assert (batched["batch"], single["batch"]) == (4, 1)
    for generation in (batched, single):
        assert generation["records"] == 8 and generation["tokens"] > 0 and positive(generation["tokens_per_s"])
    assert part["encoding"]["documents"] == 64 and positive(part["encoding"]["documents_per_s"])
    assert part["batched_vs_single"] == pytest.approx(batched["tokens_per_s"] / single["tokens_per_s"])


def test_attention_shapes_part_times_its_three_passes(dry_run):
    part = dry_run[0]["parts"]["attention_shapes"]
    assert tuple(part["passes"]) == SHAPE_PASSES and part["rows"] == 4
    for entry in part["passes"].values():
        assert entry["batches"] == 3 and all(positive(entry[key]) for key in ("ms_per_batch", "ms_first_batch"))
    repeated = part["passes"][SHAPE_PASSES[2]]["ms_per_batch"]
    assert part["vs_repeated"] == {title: pytest.approx(entry["ms_per_batch"] / repeated)
                                   for title, entry in part["passes"].items()}


def test_markdown_table_lists_every_part(dry_run):
    table = dry_run[1]
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    for title in ("(a) TMoLE layer", "(b) SmolLM2-135M training", "(c) Mistral-7B training", "(d) evaluation",
                  "(e) attention shapes"):
        assert any(row.startswith(f"| {title} |") for row in rows), title
    assert "| part | measurement | value | note |" in table and "dry run" in table.splitlines()[0]


def test_console_shows_progress_lines(dry_run):
    stderr = dry_run[2]
    assert "(b) SmolLM2-135M training step 6/6" in stderr and "(c) Mistral-7B training step 4/4" in stderr


def test_without_a_gpu_a_real_run_stops_at_once_with_one_line(tmp_path):
    # "at once": before any part (a part prints progress lines and makes the output folder); no wall-clock
    # bound, since the imports before the device check alone can take tens of seconds on a busy machine
    done = run_suite("--out", str(tmp_path / "out"), timeout=240)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_suite: no CUDA GPU is visible"), done.stderr
    assert "--dry-run" in lines[0] and not (tmp_path / "out").exists()


@pytest.fixture
def bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))


def test_peak_table_knows_the_hopper_chips(bench_on_path):
    from gpu_common import table_peak_tflops

    assert table_peak_tflops("NVIDIA H100 80GB HBM3") == table_peak_tflops("NVIDIA H200") == 989.0
    assert table_peak_tflops("NVIDIA H100 PCIe") == 756.0 and table_peak_tflops("NVIDIA A10G") is None


def test_a_failed_part_is_reported_and_a_part_without_time_is_skipped(bench_on_path):
    from gpu_common import Device, Part, TimeBox, run_part
    from gpu_report import markdown

    cpu = Device("cpu", "CPU", None, None)
    failed = run_part(Part("evaluation", "(d) evaluation", lambda box, label: 1 / 0), 60.0, TimeBox(480.0), cpu)
    spent = TimeBox(480.0, started=time.perf_counter() - 480.0)
    skipped = run_part(Part("mistral7b_training", "(c) Mistral-7B training", lambda box, label: {}), 60.0, spent, cpu)
    assert (failed["status"], failed["error"]) == ("failed", "ZeroDivisionError: division by zero")
    assert skipped["status"] == "skipped" and skipped["budget_s"] <= 0
    device = {"name": "CPU", "torch": "2", "cuda": None, "transformers": "5"}
    table = markdown({"dry_run": True, "date": "today", "elapsed_s": 1.0, "device": device,
                      "parts": {"evaluation": failed, "mistral7b_training": skipped}})
    assert "| (d) evaluation | failed |  | ZeroDivisionError: division by zero |" in table
    assert "| (c) Mistral-7B training | skipped |  | the suite's time was spent |" in table


@pytest.fixture
def one_thread():
    """As the dry run: on a busy 2-core machine two threads spin waiting for each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_spent_box_stops_the_loops_after_their_first_timed_round(bench_on_path, one_thread, tmp_path):
    import torch
    from gpu_common import Device, TimeBox
    from gpu_layer import LayerSizes, layer_benchmark
    from gpu_shapes import ShapeSizes, attention_shapes
    from gpu_train import TrainSizes, random_model_training
    from recfound.model.presets import preset_config

    cpu = Device("cpu", "CPU", None, None)
    layer = layer_benchmark(LayerSizes(dim=64, batch=1, seq=8, rank=4, rounds=50), cpu, TimeBox(0.0), "(a)")
    assert layer["cut_short"] and layer["rounds"] == 1 and positive(layer["ms_fwd_bwd"]["fused TMoLE"])
    sizes = TrainSizes(steps=10, embedding_batch=2, generative_batch=2, embedding_micro_batch=2,
                       generative_micro_batch=2, lr=1e-3, seq=16)
    profile = tmp_path / "profile.txt"
    trained = random_model_training(preset_config("tiny", 64), "tiny", sizes, cpu, TimeBox(0.0), "(c)", profile)
    assert trained["cut_short"] and trained["steps"] == sizes.warmup_steps + 1 and trained["steps_planned"] == 10
    assert "profile" not in trained and not profile.exists()  # no time left for the profiled step
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        shapes = attention_shapes(preset_config("tiny", 64), "tiny", ShapeSizes(rows=2, batches=5, first_length=6),
                                  cpu, TimeBox(0.0), "(e)")
        assert not torch.backends.cuda.cudnn_sdp_enabled()  # left off, as every model load leaves it
    finally:
        torch.backends.cuda.enable_cudnn_sdp(True)
    assert shapes["cut_short"] and [entry["batches"] for entry in shapes["passes"].values()] == [1, 1, 1]
    assert positive(trained["tokens_per_s"]) and trained["mfu"] is None  # no peak known
