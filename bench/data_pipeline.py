"""Is the data pipeline fast enough? records/s through read+tokenize+mix vs what a training step consumes.

Run: make bench   (or: PYTHONPATH=platform python bench/data_pipeline.py [--scale small] [--steps 200])
Both rates are measured in this one run on this machine and reported side by side as a ratio.
The training side is one step of the tiny preset model (see bench/tiny_step.py); it has no
optimizer, so the training rate is an upper bound and the ratio a lower bound.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from tiny_step import training_step_seconds  # noqa: E402

from recfound.cluster import ray_session  # noqa: E402
from recfound.data.corpus_text import corpus_texts  # noqa: E402
from recfound.data.pipeline import load_pools, run_mixer  # noqa: E402
from recfound.data.synth import synthesize  # noqa: E402
from recfound.data.tokenizer import build_corpus_tokenizer  # noqa: E402
from recfound.progress import format_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="small", help="synthetic corpus scale to read (tiny, small, paper)")
    parser.add_argument("--steps", type=int, default=200, help="mixer steps to time")
    parser.add_argument("--train-steps", type=int, default=10, help="model steps to time")
    parser.add_argument("--embedding-batch", type=int, default=32)
    parser.add_argument("--generative-batch", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        data, tokenizer_dir = Path(tmp) / "data", str(Path(tmp) / "tokenizer")
        synthesize(data, 0, args.scale)
        build_corpus_tokenizer(corpus_texts(data), tokenizer_dir, vocab_size=2048)
        with ray_session():
            start = time.perf_counter()
            pools = load_pools(data, "train", tokenizer_dir)
            load_seconds = time.perf_counter() - start
        loaded = sum(len(p) for p in pools.values())
        mix = run_mixer(pools, tokenizer_dir, args.steps, args.embedding_batch, args.generative_batch,
                        progress=False)
        mixed = sum(mix.records.values())
        step_seconds, step_tokens = training_step_seconds(pools, tokenizer_dir, args.embedding_batch,
                                                          args.generative_batch, args.train_steps)

    # Every record is read+tokenized once per epoch and mixed+collated once per use.
    pipeline_rate = 1.0 / (load_seconds / loaded + mix.seconds / mixed)
    train_rate = (args.embedding_batch + args.generative_batch) / step_seconds
    print(format_table(["stage", "records", "seconds", "records/s"], [
        ["read+validate+tokenize (Ray Data)", loaded, load_seconds, loaded / load_seconds],
        ["mix+collate", mixed, mix.seconds, mixed / mix.seconds],
        ["pipeline (both, per record)", "", "", pipeline_rate],
        [f"tiny model fwd+bwd ({step_tokens:,.0f} tokens/step)", args.embedding_batch + args.generative_batch,
         step_seconds, train_rate],
    ]))
    print(f"\npipeline / training consumption = {pipeline_rate / train_rate:.1f}x  (goal: >= 10x)")


if __name__ == "__main__":
    main()
