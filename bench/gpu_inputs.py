"""The GPU suite's inputs: the tiny synthetic corpus with a model's tokenizer (real records, for the
SmolLM2 training and the evaluation parts), tokenized into task pools in this process (no Ray Data),
and fixed-length random-token batches (for the throughput of the 7B config)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import torch

from recfound.data.blocks import records_table
from recfound.data.corpus_text import corpus_texts
from recfound.data.streams import TokenPool
from recfound.data.synth import synthesize
from recfound.data.tokenize import TokenLimits, tokenize_batch
from recfound.data.tokenizer import build_corpus_tokenizer, resolve_tokenizer
from recfound.eval.data import load_split
from recfound.model.presets import PRESETS
from recfound.tasks import Kind, get_task, task_index, tasks_of_kind

CORPUS_VOCAB = 2048


class Workspace:
    """A scratch folder holding the tiny synthetic corpus and tokenizer folders, each made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @cached_property
    def corpus(self) -> Path:
        root = self.folder / "corpus"
        synthesize(root, 0, "tiny")
        return root

    def tokenizer(self, backbone: str) -> str:
        """The tokenizer folder of `backbone`: a corpus-built one for a preset (random weights, small
        vocabulary), else the model's own (a GGUF file's converted once into the project's cache)."""
        if backbone not in PRESETS:
            return str(resolve_tokenizer(backbone))
        folder = self.folder / "corpus-tokenizer"
        if not (folder / "tokenizer.json").is_file():
            build_corpus_tokenizer(corpus_texts(self.corpus), folder, vocab_size=CORPUS_VOCAB)
        return str(folder)


def local_pools(root: Path, split: str, tokenizer_path: str,
                limits: TokenLimits = TokenLimits()) -> dict[str, TokenPool]:
    """Every task's records of a split tokenized into a pool here, as the Ray Data streams would."""
    pools = {}
    for name, records in load_split(root, split).items():
        task = get_task(name)
        pools[name] = TokenPool(name, tokenize_batch(records_table(records, task), tokenizer_path, task.kind.value,
                                                     limits))
    return pools


def on_device(batches: Iterator[tuple[dict, dict]], device: torch.device) -> Iterator[tuple[dict, dict]]:
    """The same steps with every tensor moved to `device`."""
    for embedding, generative in batches:
        yield ({k: v.to(device) for k, v in embedding.items()}, {k: v.to(device) for k, v in generative.items()})


def random_step(vocab_size: int, embed_id: int, embedding_rows: int, generative_rows: int,
                seq: int) -> tuple[dict, dict]:
    """One step's (embedding, generative) batches of random tokens in the collated layout, every row
    full (no padding): generative rows of `seq` tokens whose last quarter is the response; queries
    and documents of `seq // 2` tokens starting with `<embed>`. Rows cycle through the tasks of each kind."""
    generator = torch.Generator().manual_seed(0)
    text = seq // 2

    def tokens(rows: int, width: int) -> torch.Tensor:
        return torch.randint(0, vocab_size, (rows, width), generator=generator)

    def task_ids(kind: Kind, rows: int) -> torch.Tensor:
        ids = [task_index(task.name) for task in tasks_of_kind(kind)]
        return torch.tensor([ids[row % len(ids)] for row in range(rows)])

    input_ids = tokens(generative_rows, seq)
    labels = input_ids.clone()
    labels[:, : seq - seq // 4] = -100  # the prompt
    generative = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
                  "task_ids": task_ids(Kind.GENERATIVE, generative_rows)}
    queries, documents = tokens(embedding_rows, text), tokens(embedding_rows, text)
    queries[:, 0] = documents[:, 0] = embed_id
    query_tasks = task_ids(Kind.EMBEDDING, embedding_rows)
    embedding = {"query_ids": queries, "query_mask": torch.ones_like(queries),
                 "query_prefix_len": torch.full((embedding_rows,), text // 4),
                 "doc_ids": documents, "doc_mask": torch.ones_like(documents),
                 "negative_owner": torch.zeros(0, dtype=torch.long), "task_ids": query_tasks,
                 "doc_task_ids": query_tasks.clone()}
    return embedding, generative
