"""Scoring as the RecFound authors' scripts/eval.py and scripts/eval_emb.py score (`eval.scoring: authors`).

Only the rules that differ from ours (`recfound.eval.metrics`) live here: SR valid on the letters A-T
and SA, PRP on A-E whatever the option count; AVE counting every prediction once per reference
triple, case-sensitive containment in which an empty value matches; sampled retrieval ranked by
`np.argsort` of pairwise cosines, without a cut-off, NaN queries left out of Q2I and U2I, I2I against
its first 5 negatives. The rules, and what this module decides where their scripts would stop with an
error: docs/evaluation.md, "The authors' scoring".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from recfound.data.records import TRIPLE_KEYS
from recfound.eval.metrics import MetricResult, accuracy, check_lengths, macro_f1_of, per_record, reference_letters
from recfound.eval.retrieval import argsort_ranks
from recfound.tasks import get_task

SR_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRST")  # their valid answers for Sequential_Recommendation
CLASS_LETTERS = frozenset("ABCDE")  # ... for the multi-class tasks (SA, PRP)
NDCG_NEGATIVES = 5  # I2I: negative_embeddings[0][:5]


def _stripped(text: str | None) -> str:
    return text.strip() if isinstance(text, str) else ""


def recall_at_1(predictions: Sequence[str | None], references: Sequence[str],
                n_options: int | Sequence[int]) -> MetricResult:
    """Accuracy; an answer is valid when, stripped, it is one of the letters A-T."""
    check_lengths(predictions, references)
    truth = reference_letters(references, per_record(n_options, len(references)))
    guessed = [answer if (answer := _stripped(p)) in SR_LETTERS else None for p in predictions]
    return MetricResult(accuracy(guessed, truth), guessed.count(None), {})


def macro_f1(predictions: Sequence[str | None], references: Sequence[str],
             n_options: int | Sequence[int]) -> MetricResult:
    """Macro F1 over the letters; an answer is valid when its first character after stripping is A-E."""
    check_lengths(predictions, references)
    truth = reference_letters(references, per_record(n_options, len(references)))
    guessed = [letter if (letter := _stripped(p)[:1]) in CLASS_LETTERS else None for p in predictions]
    return macro_f1_of(guessed, truth)


def _reference_triples(reference: str, index: int) -> list[dict]:
    try:
        items = json.loads(reference)
    except (ValueError, RecursionError):
        items = None
    if not isinstance(items, list) or not all(isinstance(item, dict) and all(isinstance(item.get(key), str)
                                                                             for key in TRIPLE_KEYS) for item in items):
        raise ValueError(f"reference {index} is not a JSON list of attribute/value/source objects")
    return items


def _hit(prediction: dict[str, Any], label: dict[str, str]) -> bool:
    """Their two match rules: all three equal, or the same attribute with value and source (not None) each
    containing the other (the value as text)."""
    attribute, value, source = (prediction[key] for key in TRIPLE_KEYS)
    if attribute != label["attribute"]:
        return False
    if value == label["value"] and source == label["source"]:
        return True
    return (value is not None and isinstance(source, str)
            and (str(value) in label["value"] or label["value"] in str(value))
            and (source in label["source"] or label["source"] in source))


def triple_f1(predictions: Sequence[str | None], references: Sequence[str]) -> MetricResult:
    """Micro F1 over the (reference triple, prediction) pairs of each record (see the module doc)."""
    check_lengths(predictions, references)
    hits = labels = predicted = invalid = 0
    for index, (prediction, reference) in enumerate(zip(predictions, references)):
        truth = _reference_triples(reference, index)
        try:
            items = json.loads(prediction)  # type: ignore[arg-type]
        except (TypeError, ValueError, RecursionError):
            invalid, items = invalid + 1, []
        objects = [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        for label in truth:
            labels += 1
            predicted += sum("attribute" in item for item in objects)
            hits += sum(all(key in item for key in TRIPLE_KEYS) and _hit(item, label) for item in objects)
    recall = hits / labels if labels else 0.0
    precision = hits / (predicted + 1e-6)
    f1 = (2 * recall * precision) / (recall + precision + 1e-6)
    return MetricResult(f1, invalid, {"precision": precision, "recall": recall})


def sampled_ranks(task: str, queries: np.ndarray, documents: np.ndarray,
                  candidates: list[list[int]]) -> tuple[np.ndarray, int, int]:
    """(the ranks of the queries kept, how many were left out, the negatives each was ranked against) of
    an embedding task under the sampled protocol, as their eval_emb.py ranks (see the module doc)."""
    ndcg = get_task(task).metric.startswith("ndcg")
    rows = [row[:1 + NDCG_NEGATIVES] for row in candidates] if ndcg else candidates
    ranks, skipped = argsort_ranks(queries, documents, rows, skip_nan=not ndcg)
    return ranks, skipped, len(rows[0]) - 1 if rows else 0
