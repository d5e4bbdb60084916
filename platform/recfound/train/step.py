"""One training step: the embedding batch through GradCache, the generative batch through gradient
accumulation, both back-propagated through one `backward` callable before the single optimizer step.

The step's loss is InfoNCE over the global embedding batch plus the token-mean cross-entropy over
all response tokens of the global generative batch: the same numbers, and the same gradients, as
one full-batch forward on one device. Every rank runs both branches (ZeRO's collectives need it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from recfound.model.adapter import Adapter
from recfound.model.objectives import EmbeddingConfig, response_row_losses
from recfound.train.chunks import Chunk, split_rows, take
from recfound.train.distributed import all_sum, world_size
from recfound.train.gradcache import Backward, cached_embedding_backward

GENERATIVE_KEYS = ("input_ids", "attention_mask", "labels", "task_ids")


@dataclass(frozen=True)
class StepOptions:
    embedding: EmbeddingConfig
    embedding_micro_batch: int
    generative_micro_batch: int


@dataclass
class StepLosses:
    """The step's global losses and each task's train loss (NaN for a task without rows this step)."""

    embedding: float
    generative: float
    tasks: dict[str, float]

    @property
    def total(self) -> float:
        return self.embedding + self.generative

    @property
    def finite(self) -> bool:
        return math.isfinite(self.total)


def generative_row_losses(adapter: Adapter, batch: Mapping[str, Tensor], chunk: Chunk) -> tuple[Tensor, Tensor]:
    """(per-row response-token loss sums, per-row token counts) of one chunk of a generative batch."""
    part = take(batch, GENERATIVE_KEYS, chunk, "attention_mask")
    adapter.set_tasks(part["task_ids"])
    return response_row_losses(adapter.model, part["input_ids"], part["attention_mask"], part["labels"])


def generative_backward(adapter: Adapter, batch: Mapping[str, Tensor], micro_batch: int, backward: Backward,
                        grad_scale: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Accumulate the gradient of the global token-mean response CE over micro-batches.

    Returns (global loss, this rank's per-row token-loss sums, per-row token counts), without graphs.
    """
    device = batch["input_ids"].device
    row_tokens = (batch["labels"][:, 1:] != -100).sum(dim=1)
    global_tokens = max(1, int(all_sum(row_tokens.sum()).item()))
    sums, counts = torch.zeros(len(row_tokens), dtype=torch.float64, device=device), row_tokens
    for chunk in split_rows(len(row_tokens), micro_batch, device):
        row_sums, _ = generative_row_losses(adapter, batch, chunk)
        backward(row_sums.sum() * (chunk.weight * grad_scale / global_tokens))
        if chunk.weight:
            sums[chunk.start: chunk.stop] = row_sums.detach().to(torch.float64)
    return all_sum(sums.sum()) / global_tokens, sums, counts


def per_task_means(task_names: list[str], parts: list[tuple[Tensor, Tensor, Tensor]]) -> dict[str, float]:
    """Per task, sum(loss) / sum(weight) over all ranks, from (task ids, loss sums, weights) triples."""
    device = parts[0][0].device
    totals = torch.zeros(2, len(task_names), dtype=torch.float64, device=device)
    for task_ids, losses, weights in parts:
        totals[0].index_add_(0, task_ids, losses.to(torch.float64))
        totals[1].index_add_(0, task_ids, weights.to(torch.float64))
    losses, weights = all_sum(totals).tolist()
    return {name: losses[i] / weights[i] if weights[i] > 0 else float("nan") for i, name in enumerate(task_names)}


def train_step(adapter: Adapter, embedding_batch: Mapping[str, Tensor], generative_batch: Mapping[str, Tensor],
               options: StepOptions, backward: Backward, grad_scale: float | None = None) -> StepLosses:
    """Run both branches' backwards for one step (the caller then steps the optimizer).

    `grad_scale` defaults to the world size: DeepSpeed averages gradients over ranks, while the
    per-rank shares here must be summed.
    """
    scale = float(world_size()) if grad_scale is None else grad_scale
    embedding_loss, per_query = cached_embedding_backward(
        adapter.model, embedding_batch, options.embedding, options.embedding_micro_batch, backward,
        route=adapter.set_tasks, grad_scale=scale)
    generative_loss, row_sums, row_tokens = generative_backward(
        adapter, generative_batch, options.generative_micro_batch, backward, scale)
    tasks = per_task_means(list(adapter.tasks.names), [
        (embedding_batch["task_ids"], per_query, torch.ones_like(per_query)),
        (generative_batch["task_ids"], row_sums, row_tokens),
    ])
    return StepLosses(embedding_loss.item(), generative_loss.item(), tasks)

