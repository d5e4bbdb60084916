"""The two training objectives: InfoNCE over mean-pooled embeddings, and response-only token cross-entropy.

Batches are the dicts of `recfound.data.collate` as torch tensors. `model` is the HF causal LM. With an
adapter, pass `model=adapter.model, route=adapter.set_tasks`: the batch-level functions route every
forward by the task ids of its rows (queries, then documents), and `route` is a no-op for plain LoRA.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recfound.data.collate import IGNORE_INDEX
from recfound.model.attention import bidirectional as bidirectional_attention
from recfound.model.attention import decoder_of

# Documents carry no instruction, only their leading <embed> token (see recfound.data.tokenize).
DOCUMENT_PREFIX_LEN = 1


@dataclass(frozen=True)
class EmbeddingConfig:
    """Options of the embedding objective. A run's are its config's `embedding` section, whose
    `pool_instruction` is false (the authors' pooling); this class's own default pools the instruction too."""

    temperature: float = 0.02  # as in the authors' code and GritLM
    symmetric: bool = False  # also the document -> query direction
    pool_instruction: bool = True  # False: pool over the non-instruction tokens only (authors, GritLM)
    bidirectional: bool = False  # True: embed with bidirectional attention (authors, GritLM)
    share_negatives: bool = True  # False: a given negative only counts for the query that brought it

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def mean_pool(hidden: Tensor, mask: Tensor, prefix_len: Tensor | None = None) -> Tensor:
    """Mean of `hidden` [B, T, H] over the non-pad positions of `mask` [B, T] -> [B, H].

    With `prefix_len` [B], positions before `prefix_len[b]` (the `<embed>` + instruction tokens) are
    left out; a row left with no token that way (all instruction) falls back to all its non-pad tokens.
    A row with no non-pad token at all pools to zeros. Accumulates in at least float32.
    """
    if hidden.dim() != 3 or hidden.shape[0] == 0:
        raise ValueError(f"hidden must be a non-empty [B, T, H] tensor, got shape {tuple(hidden.shape)}")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask must have shape {tuple(hidden.shape[:2])}, got {tuple(mask.shape)}")
    keep = mask.bool()
    if prefix_len is not None:
        if prefix_len.shape != hidden.shape[:1]:
            raise ValueError(f"prefix_len must have shape ({hidden.shape[0]},), got {tuple(prefix_len.shape)}")
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        after = keep & (positions[None, :] >= prefix_len.to(hidden.device)[:, None])
        keep = torch.where(after.any(dim=1, keepdim=True), after, keep)
    weights = keep.to(_accumulation_dtype(hidden.dtype))
    total = torch.einsum("bth,bt->bh", hidden.to(weights.dtype), weights)
    return total / weights.sum(dim=1, keepdim=True).clamp(min=1)


def _check_info_nce(queries: Tensor, documents: Tensor, positive_index: Tensor,
                    negative_owner: Tensor | None, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if queries.dim() != 2 or queries.shape[0] == 0:
        raise ValueError(f"queries must be a non-empty [B, H] tensor, got shape {tuple(queries.shape)}")
    if documents.dim() != 2 or documents.shape[1] != queries.shape[1] or documents.shape[0] < queries.shape[0]:
        raise ValueError(f"documents must be [D >= {queries.shape[0]}, {queries.shape[1]}], "
                         f"got shape {tuple(documents.shape)}")
    if positive_index.shape != queries.shape[:1]:
        raise ValueError(f"positive_index must have shape ({queries.shape[0]},), got {tuple(positive_index.shape)}")
    if negative_owner is not None and negative_owner.shape != (documents.shape[0] - queries.shape[0],):
        raise ValueError(f"negative_owner must have shape ({documents.shape[0] - queries.shape[0]},) "
                         f"(one entry per non-positive document), got {tuple(negative_owner.shape)}")


def info_nce(queries: Tensor, documents: Tensor, temperature: float = 0.02, symmetric: bool = False,
             negative_owner: Tensor | None = None, positive_index: Tensor | None = None,
             reduction: str = "mean") -> Tensor:
    """InfoNCE loss of `queries` [B, H] against `documents` [D, H] (cosine similarity / temperature).

    Query i's positive is document `positive_index[i]` (default: i, the collate layout of B positives
    then N given negatives); every other document row is one of its negatives: the other queries'
    positives (in-batch) and all given negatives, whichever query gave them, as GritLM does.
    `negative_owner` [D - B] (the owning query of each non-positive row, in row order) restricts each
    such row to the query that brought it. `symmetric` averages in the document -> query direction,
    scoring each query's positive against all queries.

    The function only sees the rows it is given. To use other ranks' batches as extra negatives the
    caller concatenates the gathered document rows and passes `positive_index` pointing each local
    query at its positive in that matrix (e.g. rank offset + i).

    `reduction="none"` returns the [B] per-query losses (symmetric: each query's mean of both directions).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if positive_index is None:
        positive_index = torch.arange(queries.shape[0], device=queries.device)
    _check_info_nce(queries, documents, positive_index, negative_owner, temperature)
    dtype = _accumulation_dtype(queries.dtype)
    q = F.normalize(queries.to(dtype), dim=-1)
    d = F.normalize(documents.to(dtype), dim=-1)
    positive_index = positive_index.to(q.device)
    logits = q @ d.T / temperature
    if negative_owner is not None:
        is_positive = torch.zeros(d.shape[0], dtype=torch.bool, device=d.device)
        is_positive[positive_index] = True
        owner = torch.full((d.shape[0],), -1, dtype=torch.long, device=d.device)
        owner[~is_positive] = negative_owner.to(d.device, torch.long)
        rows = torch.arange(q.shape[0], device=q.device)
        foreign = ~is_positive[None, :] & (owner[None, :] != rows[:, None])
        logits = logits.masked_fill(foreign, float("-inf"))
    loss = F.cross_entropy(logits, positive_index, reduction="none")
    if symmetric:
        reverse = d[positive_index] @ q.T / temperature
        loss = (loss + F.cross_entropy(reverse, torch.arange(q.shape[0], device=q.device), reduction="none")) / 2
    return loss.mean() if reduction == "mean" else loss


def response_token_losses(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(per-row sum of response-token cross-entropies [B], per-row response-token count [B]), logits at t
    predicting label t+1, in at least float32: the pieces of a token mean over any group of rows
    (a micro-batch of a larger batch, the rows of one task)."""
    if logits.dim() != 3 or logits.shape[0] == 0:
        raise ValueError(f"logits must be a non-empty [B, T, V] tensor, got shape {tuple(logits.shape)}")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape {tuple(logits.shape[:2])}, got {tuple(labels.shape)}")
    predictions = logits[:, :-1].to(_accumulation_dtype(logits.dtype))
    targets = labels[:, 1:].to(logits.device)
    losses = F.cross_entropy(predictions.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return losses.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


# Model families whose causal-LM head is the output embedding alone (no logit scale or soft-capping after it):
# for them the head may run on the response positions only. Any other model computes its full logits.
PLAIN_HEAD_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})


def response_row_losses(model: nn.Module, input_ids: Tensor, attention_mask: Tensor,
                        labels: Tensor) -> tuple[Tensor, Tensor]:
    """`response_token_losses` of the model's forward on a generative batch, with the LM head applied only
    at the positions that predict a response token: a prompt is several times longer than its response,
    and on a small vocabulary model the head and its cross-entropy over every position cost about as much
    as the layers (`bench/generative_head.py`). Same values, to float rounding."""
    head = model.get_output_embeddings()
    plain = getattr(getattr(model, "config", None), "model_type", None) in PLAIN_HEAD_MODELS
    # A head an adapter wraps (`tmole.targets` naming lm_head) keeps the full logits: TMoLE gates per batch row.
    if not plain or type(head) is not nn.Linear:
        return response_token_losses(model(input_ids=input_ids, attention_mask=attention_mask).logits, labels)
    hidden = decoder_of(model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:].to(hidden.device)
    predicting = targets != IGNORE_INDEX
    rows, positions = predicting.nonzero(as_tuple=True)
    logits = head(hidden[rows, positions])
    losses = F.cross_entropy(logits.to(_accumulation_dtype(logits.dtype)), targets[rows, positions], reduction="none")
    sums = torch.zeros(targets.shape[0], dtype=losses.dtype, device=losses.device).index_add(0, rows, losses)
    return sums, predicting.sum(dim=1)


def response_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean token cross-entropy over the response tokens (labels != -100), logits at t predicting label t+1.

    Equals transformers' own causal-LM loss (`model(..., labels=labels).loss`), computed in at least
    float32; a batch without any response token gives 0 rather than NaN.
    """
    return token_mean(*response_token_losses(logits, labels))


def token_mean(row_sums: Tensor, row_counts: Tensor) -> Tensor:
    """The token mean of per-row loss sums and token counts; 0, not NaN, without any token."""
    return row_sums.sum() / row_counts.sum().clamp(min=1)


def embed(model: nn.Module, ids: Tensor, mask: Tensor, prefix_len: Tensor | None = None,
          bidirectional: bool = False, pool_instruction: bool = True) -> Tensor:
    """Mean-pooled last hidden states [B, H] of token rows `ids`/`mask` [B, T].

    Runs the base transformer (`model.get_decoder()`), so the LM head is never applied. With
    `pool_instruction=False`, the first `prefix_len[b]` tokens of each row are left out of the mean.
    """
    if pool_instruction:
        prefix_len = None
    elif prefix_len is None:
        raise ValueError("prefix_len is required when pool_instruction is False")
    mode = bidirectional_attention(model) if bidirectional else nullcontext()
    with mode:
        hidden = decoder_of(model)(input_ids=ids, attention_mask=mask).last_hidden_state
    return mean_pool(hidden, mask.to(hidden.device), prefix_len)


Route = Callable[[Tensor], object]  # e.g. Adapter.set_tasks: route the next forwards by per-row task ids


def _route(route: Route | None, task_ids: Tensor) -> None:
    if route is not None:
        route(task_ids)


def embed_batch(model: nn.Module, batch: Mapping[str, Tensor], config: EmbeddingConfig = EmbeddingConfig(),
                route: Route | None = None) -> tuple[Tensor, Tensor]:
    """(query embeddings [B, H], document embeddings [B + N, H]) of a collated embedding batch."""
    options = dict(bidirectional=config.bidirectional, pool_instruction=config.pool_instruction)
    _route(route, batch["task_ids"])
    queries = embed(model, batch["query_ids"], batch["query_mask"], batch["query_prefix_len"], **options)
    doc_prefix = torch.full((batch["doc_ids"].shape[0],), DOCUMENT_PREFIX_LEN, device=batch["doc_ids"].device)
    _route(route, batch["doc_task_ids"])
    documents = embed(model, batch["doc_ids"], batch["doc_mask"], doc_prefix, **options)
    return queries, documents


def embedding_loss(model: nn.Module, batch: Mapping[str, Tensor], config: EmbeddingConfig = EmbeddingConfig(),
                   route: Route | None = None) -> Tensor:
    """InfoNCE of a collated embedding batch (in-batch + given negatives of this batch only)."""
    queries, documents = embed_batch(model, batch, config, route)
    owner = None if config.share_negatives else batch["negative_owner"]
    return info_nce(queries, documents, config.temperature, config.symmetric, negative_owner=owner)


def generative_loss(model: nn.Module, batch: Mapping[str, Tensor], route: Route | None = None) -> Tensor:
    """Response-only token cross-entropy of a collated generative batch."""
    _route(route, batch["task_ids"])
    return token_mean(*response_row_losses(model, batch["input_ids"], batch["attention_mask"], batch["labels"]))
