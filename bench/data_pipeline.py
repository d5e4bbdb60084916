"""Does the data path scale past the driver, and is it fast enough for training?

Run: make bench   (or: PYTHONPATH=platform python bench/data_pipeline.py [--scale small] [--steps 200])

1. Read + validate + tokenize of the train split at x1 (the `--scale` corpus) and x10 (its lines ten
   times over, ids made unique), each in a child process of its own on a private local Ray cluster:
   records/s and the driver's peak RSS. The driver holds no records, so its peak should not grow with
   the corpus (goal: x10 within 1.2x of x1).
2. Records/s through read+tokenize+mix vs what a training step consumes (x1). The training side is one
   step of the tiny preset model (see bench/tiny_step.py); it has no optimizer, so the training rate is
   an upper bound and the ratio a lower bound.
Both parts are measured in this one run on this machine and reported side by side as ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.progress import format_table  # noqa: E402

REPLICAS = 10


def replicate(source: Path, target: Path, copies: int) -> None:
    """`target/train/<TASK>.jsonl` holding each line of `source`'s train files `copies` times, ids suffixed."""
    (target / "train").mkdir(parents=True)
    for path in sorted((source / "train").glob("*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        with open(target / "train" / path.name, "w") as out:
            for copy in range(copies):
                for record in records:
                    out.write(json.dumps({**record, "id": f"{record['id']}~{copy}"}) + "\n")


def measure(data: str, tokenizer_dir: str, mix: dict | None) -> dict:
    """In this (child) process: load the pools on a new private cluster; with `mix`, also time the mixer
    and the tiny model on them."""
    from recfound.cluster import ray_session
    from recfound.data.pipeline import load_pools, run_mixer

    with ray_session():
        start = time.perf_counter()
        refs = load_pools(data, "train", tokenizer_dir)
        result = {"records": sum(len(p) for p in refs.values()), "seconds": time.perf_counter() - start,
                  "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        if mix is None:
            return result
        pools = {name: ref.fetch() for name, ref in refs.items()}
    from tiny_step import training_step_seconds

    summary = run_mixer(pools, tokenizer_dir, mix["steps"], mix["embedding_batch"], mix["generative_batch"],
                        progress=False)
    step_seconds, step_tokens = training_step_seconds(pools, tokenizer_dir, mix["embedding_batch"],
                                                      mix["generative_batch"], mix["train_steps"])
    return {**result, "mixed": sum(summary.records.values()), "mix_seconds": summary.seconds,
            "step_seconds": step_seconds, "step_tokens": step_tokens}


def in_child(data: Path, tokenizer_dir: str, mix: dict | None) -> dict:
    """`measure` in a new process, so that its peak RSS is its own."""
    command = [sys.executable, __file__, "--child", json.dumps([str(data), tokenizer_dir, mix])]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="small", help="synthetic corpus scale of x1 (tiny, small, paper)")
    parser.add_argument("--steps", type=int, default=200, help="mixer steps to time")
    parser.add_argument("--train-steps", type=int, default=10, help="model steps to time")
    parser.add_argument("--embedding-batch", type=int, default=32)
    parser.add_argument("--generative-batch", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # [data, tokenizer, mix]: run `measure`, print JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return

    from recfound.data.corpus_text import corpus_texts
    from recfound.data.synth import synthesize
    from recfound.data.tokenizer import build_corpus_tokenizer

    mix = {"steps": args.steps, "train_steps": args.train_steps, "embedding_batch": args.embedding_batch,
           "generative_batch": args.generative_batch}
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        data, tokenizer_dir = Path(tmp) / "x1", str(Path(tmp) / "tokenizer")
        synthesize(data, 0, args.scale)
        build_corpus_tokenizer(corpus_texts(data), tokenizer_dir, vocab_size=2048)
        replicate(data, Path(tmp) / f"x{REPLICAS}", REPLICAS)
        x1 = in_child(data, tokenizer_dir, mix)
        x10 = in_child(Path(tmp) / f"x{REPLICAS}", tokenizer_dir, None)

    print(format_table(["corpus", "records", "seconds", "records/s", "driver peak RSS (MiB)"], [
        [f"x1 ({args.scale})", x1["records"], x1["seconds"], x1["records"] / x1["seconds"], x1["driver_peak_mib"]],
        [f"x{REPLICAS}", x10["records"], x10["seconds"], x10["records"] / x10["seconds"], x10["driver_peak_mib"]],
    ]))
    rss_ratio = x10["driver_peak_mib"] / x1["driver_peak_mib"]
    print(f"\ndriver peak RSS x{REPLICAS} / x1 = {rss_ratio:.2f}x  (goal: <= 1.2x)\n")

    # Every record is read+tokenized once per epoch and mixed+collated once per use.
    pipeline_rate = 1.0 / (x1["seconds"] / x1["records"] + x1["mix_seconds"] / x1["mixed"])
    batch = args.embedding_batch + args.generative_batch
    train_rate = batch / x1["step_seconds"]
    print(format_table(["stage", "records", "seconds", "records/s"], [
        ["read+validate+tokenize (Ray Data)", x1["records"], x1["seconds"], x1["records"] / x1["seconds"]],
        ["mix+collate", x1["mixed"], x1["mix_seconds"], x1["mixed"] / x1["mix_seconds"]],
        ["pipeline (both, per record)", "", "", pipeline_rate],
        [f"tiny model fwd+bwd ({x1['step_tokens']:,.0f} tokens/step)", batch, x1["step_seconds"], train_rate],
    ]))
    print(f"\npipeline / training consumption = {pipeline_rate / train_rate:.1f}x  (goal: >= 10x)")


if __name__ == "__main__":
    main()
