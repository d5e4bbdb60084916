"""The generative loss with the LM head on every position vs on the response positions only.

A training worker's generative forward+backward (and a validation point's forward) on the tiny preset
with a TMoLE adapter, one micro-batch of 8 records of each generative task of the tiny corpus: the full
logits with `response_token_losses` (what the workers ran before) against `response_row_losses` (the
head only where a response token is predicted). Both are timed in alternating rounds in one process
on one thread, as a Ray worker with one CPU runs; the report gives the median round of each and the
ratio, and checks that both give the same losses.

    PYTHONPATH=platform .venv/bin/python bench/generative_head.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from recfound.config import RunConfig
from recfound.data.blocks import records_table
from recfound.data.collate import collate_generative
from recfound.data.corpus_text import corpus_texts
from recfound.data.synth import synthesize
from recfound.data.tokenize import tokenize_batch
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.eval.data import load_split
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.objectives import response_row_losses, response_token_losses
from recfound.tasks import Kind, get_task, tasks_of_kind

MICRO_BATCH = 8


def generative_batches(folder: Path) -> tuple[list[dict], object]:
    """One collated micro-batch per generative task of the tiny corpus, and the tokenizer's info."""
    synthesize(folder / "data", seed=0, scale="tiny")
    tokenizer = build_corpus_tokenizer(corpus_texts(folder / "data"), folder / "tokenizer", vocab_size=2048)
    _, info = load_tokenizer(tokenizer)
    tasks = [task.name for task in tasks_of_kind(Kind.GENERATIVE)]
    records = load_split(folder / "data", "train", tasks)
    limits = RunConfig().token_limits()
    batches = []
    for task in tasks:
        table = tokenize_batch(records_table(records[task][:MICRO_BATCH], get_task(task)), str(tokenizer),
                               "generative", limits)
        batches.append({k: torch.from_numpy(v) for k, v in collate_generative(table, info.pad_id).items()})
    return batches, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        batches, info = generative_batches(Path(folder))
    adapter = attach_adapter(load_backbone("tiny", info), RunConfig().adapter_config(), [info.embed_id]).train()
    model = adapter.model

    def full(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return response_token_losses(logits, batch["labels"])

    def responses_only(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return response_row_losses(model, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def one_round(losses, backward: bool) -> float:
        start = time.perf_counter()
        for batch in batches:
            adapter.set_tasks(batch["task_ids"])
            if backward:
                losses(batch)[0].sum().backward()
            else:
                with torch.no_grad():
                    losses(batch)
        adapter.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    largest = 0.0  # relative difference of the per-row loss sums
    for batch in batches:
        adapter.set_tasks(batch["task_ids"])
        with torch.no_grad():
            before, after = full(batch)[0], responses_only(batch)[0]
        largest = max(largest, float(((before - after).abs() / before.abs().clamp(min=1e-12)).max()))
    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    predicted = sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in batches)
    print(f"{len(batches)} generative micro-batches of {MICRO_BATCH} records: {tokens:,} tokens, of which "
          f"{predicted:,} predict a response token; the losses differ by at most {largest:.1e} (relative)")
    print("| pass | every position (s) | response positions (s) | ratio |\n| --- | ---: | ---: | ---: |")
    for name, backward in (("forward + backward (training)", True), ("forward (validation)", False)):
        times = {full: [], responses_only: []}
        one_round(full, backward), one_round(responses_only, backward)  # warm-up
        for _ in range(args.rounds):
            for losses in (full, responses_only):
                times[losses].append(one_round(losses, backward))
        before, after = statistics.median(times[full]), statistics.median(times[responses_only])
        print(f"| {name} | {before:.2f} | {after:.2f} | {after / before:.2f}x |")


if __name__ == "__main__":
    main()
