"""The fixed per-task validation sample S2Sched reads (paper: 128 records per task, every step).

The sample is drawn once from each task's validation pool (seeded), and every rank evaluates its
round-robin share, in as many micro-batches as every other rank (under ZeRO-3 each forward
gathers parameters with collectives). A generative record's loss is its mean response-token cross-entropy (so a
task's validation loss is a mean over records, while `train_loss/<task>` is a mean over tokens); an
embedding record's loss is its query's InfoNCE against the documents of the task's whole sample
(gathered from all ranks), so the numbers do not depend on the number of workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import numpy as np
import torch

from recfound.data.collate import collate_embedding, collate_generative
from recfound.data.streams import TokenPool
from recfound.model.adapter import Adapter
from recfound.model.objectives import EmbeddingConfig
from recfound.tasks import Kind, get_task
from recfound.train.chunks import split_rows
from recfound.train.gradcache import EmbeddingSide, global_info_nce
from recfound.train.step import generative_row_losses

ToTensors = Callable[[Mapping[str, np.ndarray]], dict[str, torch.Tensor]]


def sample_indices(pool_size: int, per_task: int, seed: int, task: str) -> np.ndarray:
    """The fixed validation sample of one task: `per_task` pool rows (all of them if fewer), seeded."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), 1])
    return np.sort(rng.permutation(pool_size)[:per_task])


def check_validation_pools(pools: Mapping[str, TokenPool], workers: int, root: str) -> None:
    """In the driver, before any worker starts: every task's validation split has a record per worker
    (each worker evaluates a share of the sample); a ValueError naming the task's file otherwise."""
    for task, pool in pools.items():
        if len(pool) < workers:
            raise ValueError(f"{root}/val/{task}: {len(pool)} validation record(s) for {workers} workers; every "
                             "worker evaluates a share: add validation records for the task, leave the task out "
                             "(data.tasks), or use fewer workers (train.num_workers)")


class ValidationSet:
    """This rank's share of every task's validation sample, collated once."""

    def __init__(self, pools: Mapping[str, TokenPool], per_task: int, seed: int, rank: int, world_size: int,
                 pad_id: int, to_tensors: ToTensors) -> None:
        self.batches: dict[str, dict[str, torch.Tensor]] = {}
        for task, pool in pools.items():
            sample = sample_indices(len(pool), per_task, seed, task)
            if len(sample) < world_size:
                raise ValueError(f"validation sample of task {task} has {len(sample)} records for {world_size} "
                                 "workers: every worker needs at least one (raise data.val_per_task)")
            rows = pool.table.take(sample[rank::world_size])
            collate = collate_embedding if get_task(task).kind is Kind.EMBEDDING else collate_generative
            self.batches[task] = to_tensors(collate(rows, pad_id))

    @torch.no_grad()
    def losses(self, adapter: Adapter, config: EmbeddingConfig, embedding_micro_batch: int,
               generative_micro_batch: int) -> tuple[dict[str, float], dict[str, int]]:
        """(per task: the sum of this rank's record losses, per task: its number of records)."""
        was_training = adapter.training
        adapter.eval()
        sums, counts = {}, {}
        try:
            for task, batch in self.batches.items():
                if get_task(task).kind is Kind.EMBEDDING:
                    per_record = _embedding_losses(adapter, batch, config, embedding_micro_batch)
                else:
                    per_record = _generative_losses(adapter, batch, generative_micro_batch)
                sums[task], counts[task] = float(per_record.sum()), int(per_record.numel())
        finally:
            adapter.train(was_training)
        return sums, counts


def _embed_all(adapter: Adapter, side: EmbeddingSide, config: EmbeddingConfig, micro_batch: int) -> torch.Tensor:
    device = side.columns["ids"].device
    outputs = [(chunk, side.embed(adapter.model, chunk, config, adapter.set_tasks))
               for chunk in split_rows(side.rows, micro_batch, device)]
    return torch.cat([reps for chunk, reps in outputs if chunk.weight])


def _embedding_losses(adapter: Adapter, batch: dict, config: EmbeddingConfig, micro_batch: int) -> torch.Tensor:
    queries = _embed_all(adapter, EmbeddingSide.queries(batch), config, micro_batch)
    documents = _embed_all(adapter, EmbeddingSide.documents(batch), config, micro_batch)
    per_query, *_ = global_info_nce(queries, documents, batch, config, grads=False)
    return per_query


def _generative_losses(adapter: Adapter, batch: dict, micro_batch: int) -> torch.Tensor:
    """Each record's mean response-token loss (a record without response tokens counts 0)."""
    parts = []
    for chunk in split_rows(batch["input_ids"].shape[0], micro_batch, batch["input_ids"].device):
        sums, counts = generative_row_losses(adapter, batch, chunk)
        if chunk.weight:
            parts.append(sums / counts.clamp(min=1))
    return torch.cat(parts)
