"""Is the data pipeline fast enough? records/s through read+tokenize+mix vs what a training step consumes.

Run: make bench   (or: PYTHONPATH=platform python bench/data_pipeline.py [--scale small] [--steps 200])
Both rates are measured in this one run on this machine and reported side by side as a ratio.
The training side is the tiny preset model (2 layers, d=128, corpus vocabulary) doing one step:
forward+backward of a generative batch (token CE on the response) plus an embedding batch
(mean-pooled queries and documents, InfoNCE); no optimizer, so the training rate is an upper bound
and the ratio a lower bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.cluster import ray_session  # noqa: E402
from recfound.data.collate import collate_embedding, collate_generative  # noqa: E402
from recfound.data.corpus_text import corpus_texts  # noqa: E402
from recfound.data.pipeline import equal_counts, load_pools, pools_by_kind, run_mixer  # noqa: E402
from recfound.data.mixer import TaskMixer  # noqa: E402
from recfound.data.synth import synthesize  # noqa: E402
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer  # noqa: E402
from recfound.progress import format_table  # noqa: E402
from recfound.tasks import Kind  # noqa: E402


def training_step_seconds(pools, tokenizer_dir: str, embedding_batch: int, generative_batch: int,
                          steps: int) -> tuple[float, float]:
    """(median seconds per fwd+bwd step of the tiny model, mean tokens per step)."""
    import torch
    import torch.nn.functional as F

    from recfound.model.presets import build_preset

    torch.set_num_threads(os.cpu_count() or 1)
    _, info = load_tokenizer(tokenizer_dir)
    model = build_preset("tiny", info.vocab_size, info.pad_id, info.eos_id)
    grouped = pools_by_kind(pools)
    emb, gen = TaskMixer(grouped[Kind.EMBEDDING], seed=1), TaskMixer(grouped[Kind.GENERATIVE], seed=1)

    def pooled(ids, mask):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    times, tokens = [], []
    for step in range(steps + 2):  # the first two steps warm up and are not timed
        g = {k: torch.from_numpy(v) for k, v in collate_generative(
            gen.next_step(equal_counts(generative_batch, gen.tasks)).rows, info.pad_id).items()}
        e = {k: torch.from_numpy(v) for k, v in collate_embedding(
            emb.next_step(equal_counts(embedding_batch, emb.tasks)).rows, info.pad_id).items()}
        start = time.perf_counter()
        loss = model(input_ids=g["input_ids"], attention_mask=g["attention_mask"], labels=g["labels"]).loss
        queries = F.normalize(pooled(e["query_ids"], e["query_mask"]), dim=-1)
        docs = F.normalize(pooled(e["doc_ids"], e["doc_mask"]), dim=-1)
        loss = loss + F.cross_entropy(queries @ docs.T / 0.02, torch.arange(len(queries)))
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - start)
            tokens.append(int(g["attention_mask"].sum() + e["query_mask"].sum() + e["doc_mask"].sum()))
    times.sort()
    return times[len(times) // 2], sum(tokens) / len(tokens)


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
