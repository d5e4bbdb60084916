"""One training step of the tiny preset model, timed: the yardstick the other benchmarks compare to.

The step is forward+backward of a generative batch (token cross-entropy on the response) plus an
embedding batch (mean-pooled queries and documents, in-batch InfoNCE at temperature 0.02), drawn
by the task mixer with equal ratios. No optimizer step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from recfound.data.collate import collate_embedding, collate_generative
from recfound.data.mixer import TaskMixer
from recfound.data.pipeline import equal_counts, pools_by_kind
from recfound.data.streams import TokenPool
from recfound.data.tokenizer import load_tokenizer
from recfound.tasks import Kind

WARMUP_STEPS = 2


def training_step_seconds(pools: dict[str, TokenPool], tokenizer_dir: str, embedding_batch: int,
                          generative_batch: int, steps: int) -> tuple[float, float]:
    """(median seconds per fwd+bwd step of the tiny model, mean tokens per step)."""
    import torch
    import torch.nn.functional as F

    from recfound.model.presets import build_preset

    torch.set_num_threads(os.cpu_count() or 1)
    _, info = load_tokenizer(tokenizer_dir)
    model = build_preset("tiny", info.vocab_size, info.pad_id, info.eos_id)
    batches = mixed_batches(pools, info.pad_id, embedding_batch, generative_batch)

    def pooled(ids, mask):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    times, tokens = [], []
    for step in range(steps + WARMUP_STEPS):
        e, g = next(batches)
        start = time.perf_counter()
        loss = model(input_ids=g["input_ids"], attention_mask=g["attention_mask"], labels=g["labels"]).loss
        queries = F.normalize(pooled(e["query_ids"], e["query_mask"]), dim=-1)
        docs = F.normalize(pooled(e["doc_ids"], e["doc_mask"]), dim=-1)
        loss = loss + F.cross_entropy(queries @ docs.T / 0.02, torch.arange(len(queries)))
        loss.backward()
        model.zero_grad(set_to_none=True)
        if step >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
            tokens.append(step_tokens(e, g))
    times.sort()
    return times[len(times) // 2], sum(tokens) / len(tokens)


def mixed_batches(pools: dict[str, TokenPool], pad_id: int, embedding_batch: int, generative_batch: int,
                  seed: int = 1) -> Iterator[tuple[dict, dict]]:
    """Endless steps of (embedding batch, generative batch), collated as CPU tensors, drawn by the task
    mixer with equal counts per task."""
    import torch

    grouped = pools_by_kind(pools)
    emb, gen = TaskMixer(grouped[Kind.EMBEDDING], seed=seed), TaskMixer(grouped[Kind.GENERATIVE], seed=seed)
    while True:
        e = collate_embedding(emb.next_step(equal_counts(embedding_batch, emb.tasks)).rows, pad_id)
        g = collate_generative(gen.next_step(equal_counts(generative_batch, gen.tasks)).rows, pad_id)
        yield ({k: torch.from_numpy(v) for k, v in e.items()}, {k: torch.from_numpy(v) for k, v in g.items()})


def step_tokens(embedding: dict, generative: dict) -> int:
    """The non-pad tokens one step's batches put through the model (queries, documents, prompts + responses)."""
    return int(generative["attention_mask"].sum() + embedding["query_mask"].sum() + embedding["doc_mask"].sum())
