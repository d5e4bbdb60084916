"""Batched inference with any model the platform loads: embeddings of queries and documents, and greedy
generation. The served MLflow model and the evaluation runner both use it, so a registered model and
an evaluation score the same computation.

Records are tokenized exactly as in training (`recfound.data.tokenize`): queries with their instruction,
documents as `<embed>` + text, generative prompts as head + body + tail. Rows are sorted by length
before batching (less padding), and results come back in input order. With an adapter, every batch is
routed by its rows' tasks; a bare backbone (zero-shot base model) has nothing to route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from recfound.data.collate import pad
from recfound.data.blocks import records_table
from recfound.data.tokenize import TokenLimits, document_ids, tokenize_batch
from recfound.data.tokenizer import load_tokenizer
from recfound.model.adapter import Adapter
from recfound.model.objectives import DOCUMENT_PREFIX_LEN, embed
from recfound.tasks import Kind, get_task


@dataclass(frozen=True)
class InferenceOptions:
    """How inputs are cut and embeddings pooled (what the model was trained with), and the batch size."""

    limits: TokenLimits = field(default_factory=TokenLimits)
    pool_instruction: bool = True
    bidirectional: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [N, T], attention mask [N, T]) padded on the left, as batched generation needs."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def _length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


class Inference:
    """Embeddings and generations of one model (see module doc)."""

    def __init__(self, model: nn.Module, tokenizer_path: str, options: InferenceOptions = InferenceOptions(),
                 adapter: Adapter | None = None, device: torch.device | str | None = None) -> None:
        self.model = model
        self.adapter = adapter
        self.tokenizer_path = str(tokenizer_path)
        self.tokenizer, self.info = load_tokenizer(self.tokenizer_path)
        self.options = options
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.generated_tokens = 0  # new tokens produced so far (for throughput reports)
        self.cut_answers = 0  # answers so far that reached max_new_tokens before EOS

    @classmethod
    def of_adapter(cls, adapter: Adapter, tokenizer_path: str, options: InferenceOptions = InferenceOptions(),
                   device: torch.device | str | None = None) -> Inference:
        """Inference through `adapter` (moved to `device` when given), in eval mode."""
        if device is not None:
            adapter.to(device)
        return cls(adapter.model, tokenizer_path, options, adapter.eval(), device)

    def _route(self, tasks: Sequence[str]) -> None:
        if self.adapter is not None:
            self.adapter.set_tasks([self.adapter.task_id(task) for task in tasks])

    def _tokens(self, records: Sequence[dict], kind: Kind):
        return tokenize_batch(records_table(list(records), get_task(records[0]["task"])), self.tokenizer_path,
                              kind.value, self.options.limits)

    @torch.inference_mode()
    def embed_queries(self, records: Sequence[dict]) -> np.ndarray:
        """[N, H] float32 embeddings of normalized embedding records (instruction + query), any tasks."""
        if not records:
            return np.zeros((0, 0), dtype=np.float32)
        tokens = self._tokens(records, Kind.EMBEDDING)
        rows = tokens.column("query_ids").to_pylist()
        prefix = tokens.column("query_prefix_len").to_pylist()
        return self._embed_rows(rows, prefix, [r["task"] for r in records])

    @torch.inference_mode()
    def embed_documents(self, texts: Sequence[str], task: str) -> np.ndarray:
        """[N, H] float32 embeddings of documents (retrieval candidates), routed as `task`."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        rows = document_ids(list(texts), self.tokenizer_path, self.options.limits)
        return self._embed_rows(rows, [DOCUMENT_PREFIX_LEN] * len(rows), [task] * len(rows))

    def _embed_rows(self, rows: list[list[int]], prefix: list[int], tasks: list[str]) -> np.ndarray:
        out: np.ndarray | None = None
        for batch in _length_batches([len(r) for r in rows], self.options.batch_size):
            ids, mask = (torch.from_numpy(a).to(self.device) for a in pad([rows[i] for i in batch], self.info.pad_id))
            self._route([tasks[i] for i in batch])
            vectors = embed(self.model, ids, mask, torch.tensor([prefix[i] for i in batch], device=self.device),
                            bidirectional=self.options.bidirectional, pool_instruction=self.options.pool_instruction)
            vectors = vectors.float().cpu().numpy()
            if out is None:
                out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        return out

    @torch.inference_mode()
    def generate(self, records: Sequence[dict], max_new_tokens: int) -> list[str]:
        """Greedy answers (decoded, stripped, up to EOS) of normalized generative records, any tasks."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not records:
            return []
        prompts = self._tokens(records, Kind.GENERATIVE).column("prompt_ids").to_pylist()
        texts = [""] * len(records)
        for batch in _length_batches([len(p) for p in prompts], self.options.batch_size):
            ids, mask = (t.to(self.device) for t in left_pad([prompts[i] for i in batch], self.info.pad_id))
            self._route([records[i]["task"] for i in batch])
            generated = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                            do_sample=False, pad_token_id=self.info.pad_id,
                                            eos_token_id=self.info.eos_id)
            for i, row in zip(batch, generated[:, ids.shape[1]:].tolist()):
                ended = self.info.eos_id in row
                answer = row[: row.index(self.info.eos_id)] if ended else row
                self.generated_tokens += len(answer)
                self.cut_answers += not ended
                texts[i] = self.tokenizer.decode(answer, skip_special_tokens=True).strip()
        return texts
