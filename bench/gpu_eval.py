"""Part (d) of the GPU suite: the evaluation path in bf16 (`recfound.model.inference`, which the evaluation
runner and the served model use) on the SmolLM2 model with a TMoLE adapter: greedy generation tokens/s
at batch 32 and at batch 1 on the tiny corpus's generative test records, and documents encoded per
second (the corpus's retrieval documents, topped up with item cards as bench/eval.py does)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from eval import extra_items, generation_rate, timed_slices
from gpu_common import Device, TimeBox
from gpu_inputs import Workspace
from gpu_model import loaded_backbone, with_adapter
from recfound.data.tokenizer import load_tokenizer
from recfound.eval.data import CandidatePool, load_split
from recfound.model.inference import Inference, InferenceOptions

GENERATIVE_TASKS = ["SR", "AVE", "QR", "AP"]  # short answers and long ones, as bench/eval.py
RETRIEVAL_TASKS = ["Q2I", "I2I", "U2I"]
DOCUMENT_SLICE = 1024  # documents per encoding call (the box is looked at between calls)


@dataclass(frozen=True)
class EvalSizes:
    records: int
    new_tokens: int
    batch: int
    documents: int


def evaluation(spec: str, workspace: Workspace, sizes: EvalSizes, device: Device, box: TimeBox, label: str) -> dict:
    """Generation at `sizes.batch` and at 1, then document encoding, each stopped early when the box runs out."""
    tokenizer = workspace.tokenizer(spec)
    _, info = load_tokenizer(tokenizer)
    adapter = with_adapter(loaded_backbone(spec, info, torch.bfloat16, device.torch_device), info.embed_id,
                           checkpointing=False)
    inference = Inference.of_adapter(adapter, tokenizer, InferenceOptions(batch_size=sizes.batch))
    result = {"backbone": Path(spec).name, "build_seconds": box.elapsed(), "new_tokens": sizes.new_tokens}
    records = generative_records(workspace.corpus, sizes.records)
    inference.generate(records[: sizes.batch], 2)  # untimed: first calls pick kernels and grow the allocator
    result["generation"] = [generation(inference, records, sizes.new_tokens, batch, box, label)
                            for batch in (sizes.batch, 1)]
    documents = corpus_documents(workspace.corpus, sizes.documents)
    result["encoding"] = encoding(inference, documents, box, label)
    batched, single = result["generation"]
    result["batched_vs_single"] = batched["tokens_per_s"] / single["tokens_per_s"]
    result["cut_short"] = (min(batched["records"], single["records"]) < len(records)
                           or result["encoding"]["documents"] < len(documents))
    return result


def generation(inference: Inference, records: list[dict], new_tokens: int, batch: int, box: TimeBox,
               label: str) -> dict:
    """Greedy generation over `records` in batches of `batch`, one batch per call (so the box can stop it)."""
    done, tokens, seconds = generation_rate(inference, records, new_tokens, batch, batch, box.expired)
    print(f"{label}: generate, batch {batch}: {done} records, {tokens:,} new tokens in {seconds:.1f}s "
          f"({tokens / seconds:,.0f} tokens/s), elapsed {box.elapsed():.1f}s", flush=True)
    return {"batch": batch, "records": done, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def encoding(inference: Inference, documents: list[str], box: TimeBox, label: str) -> dict:
    """Documents embedded per second, `DOCUMENT_SLICE` per call (so the box can stop it)."""
    done, seconds = timed_slices(lambda part: inference.embed_documents(part, "Q2I"), documents, DOCUMENT_SLICE,
                                 box.expired)
    print(f"{label}: encode {done:,} documents in {seconds:.1f}s ({done / seconds:,.0f}/s), "
          f"elapsed {box.elapsed():.1f}s", flush=True)
    return {"documents": done, "seconds": seconds, "documents_per_s": done / seconds}


def generative_records(root: Path, count: int) -> list[dict]:
    """Up to `count` test records of the generative tasks, the same number from each."""
    test = load_split(root, "test", GENERATIVE_TASKS)
    return [record for task in test.values() for record in task[: count // len(test)]]


def corpus_documents(root: Path, count: int) -> list[str]:
    """`count` distinct retrieval documents: every split's Q2I, I2I and U2I documents, then item cards."""
    records = [record for split in ("train", "val", "test")
               for task in load_split(root, split, RETRIEVAL_TASKS).values() for record in task]
    pool = CandidatePool.of("Q2I", records)
    return list(pool.documents[:count]) + extra_items(count - len(pool.documents), set(pool.documents))
