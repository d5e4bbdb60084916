"""`recfound demo`: the embedded end-to-end run on one machine with no GPU.

Until the training job lands it runs the data pipeline end to end: synthesize the tiny corpus,
validate it, build the corpus tokenizer, tokenize every task with Ray Data on a private local
cluster, and draw mixed steps of both kinds, ending with a summary table.
"""

from __future__ import annotations

import time
from pathlib import Path

from recfound.cluster import ray_session
from recfound.data.corpus_text import corpus_texts
from recfound.data.pipeline import load_pools, run_mixer
from recfound.data.synth import synthesize
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.data.validate import validate_dataset


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run_demo(out: Path, seed: int = 0, steps: int = 200, embedding_batch: int = 32,
             generative_batch: int = 32) -> None:
    """Run the demo into `out` (data/, tokenizer/); prints each stage and a final summary."""
    data, tokenizer_dir = out / "data", out / "tokenizer"
    t = _stage(f"synthesizing the tiny corpus (seed {seed}) into {data}")
    counts = synthesize(data, seed, "tiny")
    print(f"{sum(sum(c.values()) for c in counts.values()):,} records in {time.perf_counter() - t:.1f}s")

    _stage("validating every record (strict)")
    print(validate_dataset(data).table())

    t = _stage("building the corpus tokenizer")
    build_corpus_tokenizer(corpus_texts(data), tokenizer_dir, vocab_size=2048)
    print(f"{load_tokenizer(tokenizer_dir)[1].vocab_size} tokens in {time.perf_counter() - t:.1f}s")

    t = _stage("tokenizing the train split with Ray Data (one dataset per task)")
    with ray_session():
        pools = load_pools(data, "train", str(tokenizer_dir))
    print(f"{sum(len(p) for p in pools.values()):,} records tokenized in {time.perf_counter() - t:.1f}s")
    _stage(f"mixing {steps} steps of {embedding_batch} embedding + {generative_batch} generative records")
    summary = run_mixer(pools, str(tokenizer_dir), steps, embedding_batch, generative_batch, seed=seed)
    _stage("summary")
    print(summary.table())
    records = sum(summary.records.values())
    print(f"{summary.steps} steps, {records:,} records in {summary.seconds:.2f}s "
          f"({records / max(summary.seconds, 1e-9):,.0f} records/s through mix + collate)")
