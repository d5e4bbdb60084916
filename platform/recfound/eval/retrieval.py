"""Ranks of each query's positive, by cosine similarity of normalized embeddings, under two protocols.

- `full`: against every document of the task's candidate pool (exact: one matmul per query batch,
  which ranks 1,000 queries against 10k candidates in well under a second on a CPU).
- `sampled` (the authors'): against the positive and the query's sampled negatives
  (`CandidatePool.sampled_candidates`, 19 per query in the paper).

A rank is 1 + the number of other candidates scoring at least as high as the positive: ties count
against the positive (a collapsed model that embeds everything alike ranks last, not first), and a
non-finite score ranks the positive last. `argsort_ranks` ranks as the authors' eval_emb.py does instead
(`eval.scoring: authors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PROTOCOLS = ("sampled", "full")
CATALOG = "catalog"  # every item of a root built from logs (recfound.eval.catalog), beside the protocols
QUERY_BATCH = 1024


def normalized(vectors: np.ndarray) -> torch.Tensor:
    """Rows scaled to unit length (float32); a zero row stays zero."""
    tensor = torch.as_tensor(vectors, dtype=torch.float32)
    return torch.nn.functional.normalize(tensor, dim=-1)


def _ranks_of_first(scores: torch.Tensor, own: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """1 + the candidates scoring at least `own` (the positive's score), the positive not counted: ties go
    against the positive, and a NaN score (a broken embedding) ranks last, never first. `counted`: where
    given, only the candidates it marks count (the left-out ones never do, not even against a NaN query)."""
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    own = torch.nan_to_num(own, nan=-torch.inf)
    at_least = scores >= own[:, None]
    return (at_least if counted is None else at_least & counted).sum(dim=1)


def full_pool_ranks(queries: np.ndarray, documents: np.ndarray, positives: Sequence[int],
                    excluded: Sequence[int | Sequence[int] | np.ndarray | None] = ()) -> np.ndarray:
    """[Q] 1-based ranks of document `positives[i]` for query i among all `documents`, leaving out
    document(s) `excluded[i]` (e.g. the query item itself, or a user's earlier items) where given."""
    q, d = normalized(queries), normalized(documents)
    positives = torch.as_tensor(np.asarray(positives), dtype=torch.long)
    ranks = torch.empty(len(q), dtype=torch.long)
    for start in range(0, len(q), QUERY_BATCH):
        scores = q[start:start + QUERY_BATCH] @ d.T
        counted = torch.ones_like(scores, dtype=torch.bool)
        for row, doc in enumerate(excluded[start:start + QUERY_BATCH]):
            if doc is not None:
                counted[row, torch.as_tensor(doc, dtype=torch.long)] = False
        rows = torch.arange(len(scores))
        counted[rows, positives[start:start + QUERY_BATCH]] = True  # never left out: its rank starts at 1
        ranks[start:start + QUERY_BATCH] = _ranks_of_first(scores, scores[rows, positives[start:start + QUERY_BATCH]],
                                                           counted)
    return ranks.numpy()


def sampled_ranks(queries: np.ndarray, documents: np.ndarray, candidates: list[list[int]]) -> np.ndarray:
    """[Q] 1-based ranks of each query's first candidate (its positive) among its candidate list."""
    q, d = normalized(queries), normalized(documents)
    index = torch.as_tensor(np.asarray(candidates), dtype=torch.long)  # [Q, 1 + negatives]
    scores = torch.einsum("qh,qch->qc", q, d[index])
    return _ranks_of_first(scores, scores[:, 0]).numpy()


def argsort_ranks(queries: np.ndarray, documents: np.ndarray, candidates: list[list[int]],
                  skip_nan: bool) -> tuple[np.ndarray, int]:
    """(1-based ranks of each query's first candidate, the number of queries left out) as the authors'
    eval_emb.py computes them: the cosine of each (query, candidate) pair as `np.dot` over the product of
    the `np.linalg.norm`s in float64, the positive's place in `np.argsort(similarities)[::-1]` (equal
    scores and NaNs fall as that sort leaves them); with `skip_nan`, a query whose own or candidates'
    embedding holds a NaN is left out."""
    queries, documents = np.asarray(queries, dtype=np.float64), np.asarray(documents, dtype=np.float64)
    ranks, skipped = [], 0
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero vector: a NaN cosine, as theirs
        for query, row in zip(queries, candidates):
            pool = documents[row]
            if skip_nan and (np.isnan(pool).any() or np.isnan(query).any()):
                skipped += 1
                continue
            similarities = [np.dot(query, doc) / (np.linalg.norm(query) * np.linalg.norm(doc)) for doc in pool]
            order = np.argsort(similarities)[::-1]
            ranks.append(int(np.where(order == 0)[0][0]) + 1)
    return np.asarray(ranks, dtype=np.int64), skipped
