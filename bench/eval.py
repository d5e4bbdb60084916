"""How fast does evaluation run? Generation tokens/s and retrieval queries/s, measured side by side.

On the small synthetic corpus with the tiny preset and a TMoLE adapter (random experts):
- generation: the same generative test records answered greedily in batches of `--batch` (left-padded,
  sorted by length) and one record at a time; tokens/s of each and their ratio;
- retrieval: a candidate pool of `--pool` distinct item texts (the ~7,600 Q2I, I2I and U2I documents of all
  splits, topped up with item cards of a second catalog from the same generator),
  encoded in batches, and the Q2I test queries ranked against all of it (full pool, exact) and against
  19 sampled negatives each; seconds end to end, queries/s of the ranking alone, and documents/s.

Run: PYTHONPATH=platform python bench/eval.py [--pool 10000 --batch 32 --records 64 --new-tokens 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.data.corpus_text import corpus_texts  # noqa: E402
from recfound.data.synth import synthesize  # noqa: E402
from recfound.data.synth_embed import item_card  # noqa: E402
from recfound.data.synth_world import build_world  # noqa: E402
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer  # noqa: E402
from recfound.eval.data import CandidatePool, load_split  # noqa: E402
from recfound.eval.retrieval import full_pool_ranks, sampled_ranks  # noqa: E402
from recfound.model.adapter import AdapterConfig  # noqa: E402
from recfound.model.attach import attach_adapter  # noqa: E402
from recfound.model.backbone import load_backbone  # noqa: E402
from recfound.model.inference import Inference, InferenceOptions  # noqa: E402
from recfound.progress import format_table  # noqa: E402

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench"


def corpus() -> tuple[Path, Path]:
    root = CACHE / "small"
    if not (root / "test").is_dir():
        synthesize(root, 0, "small")
    tokenizer = CACHE / "small-tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        build_corpus_tokenizer(corpus_texts(root), tokenizer, vocab_size=2048)
    return root, tokenizer


def model(tokenizer: Path, batch: int) -> Inference:
    _, info = load_tokenizer(tokenizer)
    torch.manual_seed(0)
    adapter = attach_adapter(load_backbone("tiny", info, seed=0), AdapterConfig(), [info.embed_id])
    return Inference.of_adapter(adapter, str(tokenizer), InferenceOptions(batch_size=batch))


def extra_items(count: int, taken: set[str]) -> list[str]:
    """`count` more item cards from the corpus generator's catalog (another seed), when the small corpus
    holds fewer distinct documents than the pool should."""
    if count <= 0:
        return []
    cards = [card for card in (item_card(item) for item in build_world(1, 2 * count).items) if card not in taken]
    return cards[:count]


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def timed_slices(function: Callable[[list], object], items: list, size: int,
                 should_stop: Callable[[], bool] = lambda: False) -> tuple[int, float]:
    """(items done, seconds) of `function` applied to `items` `size` at a time; `should_stop` ends it
    between slices (never before the first)."""
    done, seconds = 0, 0.0
    for start in range(0, len(items), size):
        if done and should_stop():
            break
        _, spent = timed(function, items[start:start + size])
        done, seconds = done + len(items[start:start + size]), seconds + spent
    return done, seconds


def generation_rate(inference: Inference, records: list[dict], new_tokens: int, batch: int,
                    slice_size: int | None = None, should_stop: Callable[[], bool] = lambda: False
                    ) -> tuple[int, int, float]:
    """(records answered, new tokens, seconds) of greedy generation in batches of `batch`, the records
    handed to `generate` `slice_size` at a time (default: all at once); `should_stop` ends it between slices."""
    inference.options = replace(inference.options, batch_size=batch)
    inference.generated_tokens = 0
    done, seconds = timed_slices(lambda part: inference.generate(part, new_tokens), records,
                                 slice_size or len(records), should_stop)
    return done, inference.generated_tokens, seconds


def bench_generation(inference: Inference, records: list[dict], new_tokens: int, batch: int) -> list[list]:
    rows = []
    for size in (batch, 1):
        _, tokens, seconds = generation_rate(inference, records, new_tokens, size)
        rows.append([f"generate, batch {size}", len(records), tokens, seconds, tokens / seconds])
    rows[0].append(f"{rows[0][4] / rows[1][4]:.1f}x")
    rows[1].append("1.0x")
    return rows


def bench_retrieval(inference: Inference, root: Path, pool_size: int, batch: int) -> list[list]:
    tasks = ["Q2I", "I2I", "U2I"]
    splits = {split: load_split(root, split, tasks) for split in ("test", "val", "train")}
    queries = splits["test"]["Q2I"]
    records = [r for split in splits.values() for task in tasks for r in split[task]]
    pool = CandidatePool.of("Q2I", queries + records)  # the test records first: their positives are in it
    positives = list(pool.positives[:len(queries)])
    if pool_size <= max(positives):
        raise SystemExit(f"--pool must be above {max(positives)}: the test queries' positives come first")
    documents = list(pool.documents[:pool_size]) + extra_items(pool_size - len(pool.documents), set(pool.documents))
    inference.options = InferenceOptions(batch_size=batch)
    started = time.perf_counter()
    doc_vectors, doc_seconds = timed(inference.embed_documents, documents, "Q2I")
    query_vectors, query_seconds = timed(inference.embed_queries, queries)
    _, full_seconds = timed(full_pool_ranks, query_vectors, doc_vectors, positives)
    total = time.perf_counter() - started
    sample, _ = CandidatePool("Q2I", tuple(documents), tuple(positives)).sampled_candidates(19, 0)
    _, sampled_seconds = timed(sampled_ranks, query_vectors, doc_vectors, sample)
    return [
        [f"encode {len(documents):,} documents", len(documents), "", doc_seconds, len(documents) / doc_seconds, ""],
        [f"encode {len(queries)} queries", len(queries), "", query_seconds, len(queries) / query_seconds, ""],
        [f"rank against the full pool ({len(documents):,})", len(queries), "", full_seconds,
         len(queries) / full_seconds, f"{(len(queries) / full_seconds) / (len(queries) / sampled_seconds):.2f}x"],
        ["rank against 19 sampled negatives", len(queries), "", sampled_seconds, len(queries) / sampled_seconds, "1.0x"],
        ["full-pool retrieval end to end", len(queries), "", total, len(queries) / total, ""],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    root, tokenizer = corpus()
    inference = model(tokenizer, args.batch)
    test = load_split(root, "test", ["SR", "AVE", "QR", "AP"])
    records = [r for task in test.values() for r in task[: args.records // len(test)]]
    rows = bench_generation(inference, records, args.new_tokens, args.batch)
    print(format_table(["generation", "records", "new tokens", "seconds", "tokens/s", "vs batch 1"], rows))
    retrieval = bench_retrieval(inference, root, args.pool, args.batch)
    print()
    print(format_table(["retrieval", "items", "", "seconds", "items/s", "ratio"], retrieval))


if __name__ == "__main__":
    main()
