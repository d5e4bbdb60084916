"""Collation of a step's token rows into padded arrays (numpy; the training loop makes tensors).

Generative: `input_ids` = prompt + response, right-padded; `labels` = -100 on the prompt and padding
so the loss covers the response only. Embedding: queries and documents (every row's positive,
then all given negatives) padded separately; `negative_owner` says which query gave each negative.
Both carry `task_ids` (rows of the task-embedding table); embedding batches also `doc_task_ids`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recfound.tasks import task_index

IGNORE_INDEX = -100


def pad(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, T], attention mask [N, T]) right-padded to the longest sequence."""
    width = max((len(s) for s in sequences), default=0)
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def _task_ids(rows: pa.Table) -> np.ndarray:
    return np.array([task_index(t) for t in rows.column("task").to_pylist()], dtype=np.int64)


def collate_generative(rows: pa.Table, pad_id: int) -> dict[str, np.ndarray]:
    """Padded prompt+response ids with response-only labels (see module doc)."""
    prompts = rows.column("prompt_ids").to_pylist()
    responses = rows.column("response_ids").to_pylist()
    input_ids, attention_mask = pad([p + r for p, r in zip(prompts, responses)], pad_id)
    labels = np.full_like(input_ids, IGNORE_INDEX)
    for row, (prompt, response) in enumerate(zip(prompts, responses)):
        labels[row, len(prompt): len(prompt) + len(response)] = response
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels, "task_ids": _task_ids(rows)}


def collate_embedding(rows: pa.Table, pad_id: int) -> dict[str, np.ndarray]:
    """Padded queries and documents (positives first, then negatives) for InfoNCE (see module doc)."""
    negatives = rows.column("negative_ids").to_pylist()
    query_ids, query_mask = pad(rows.column("query_ids").to_pylist(), pad_id)
    documents = rows.column("positive_ids").to_pylist() + [n for per_row in negatives for n in per_row]
    doc_ids, doc_mask = pad(documents, pad_id)
    owner = np.array([row for row, per_row in enumerate(negatives) for _ in per_row], dtype=np.int64)
    task_ids = _task_ids(rows)
    return {
        "query_ids": query_ids, "query_mask": query_mask,
        "query_prefix_len": rows.column("query_prefix_len").to_numpy().astype(np.int64),
        "doc_ids": doc_ids, "doc_mask": doc_mask, "negative_owner": owner, "task_ids": task_ids,
        "doc_task_ids": np.concatenate([task_ids, task_ids[owner]]),  # a negative is routed as its query's task
    }
