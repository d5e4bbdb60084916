"""The paper's metrics, in our reading of the authors' evaluation (docs/evaluation.md): `scoring="ours"`.

SR: Recall@1 on the option letter. AP, PM: F1 of "yes". SA, PRP: macro F1 on the option letter.
AVE: micro F1 over (attribute, value, source) triples with partial containment. QR, AG, UP, IP:
BERTScore F1 (token F1 always reported too). I2I: NDCG@k; Q2I, U2I: MRR@k. An answer outside the
record's valid set scores 0 and is counted as invalid; a bad generation (empty, None, unparseable)
never raises. `scoring="authors"` applies the rules of their scripts instead (`recfound.eval.authors`).

Python + numpy (and the config's list of scorings): BERTScore lives in `recfound.eval.bertscore` and is passed
in as a scorer.
"""

from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from recfound.config import EVAL_SCORINGS
from recfound.data.records import OPTION_LETTERS, TRIPLE_KEYS
from recfound.tasks import AnswerType, Kind, Task, get_task

if TYPE_CHECKING:
    from recfound.eval.bertscore import BertScorer

Triple = tuple[str, str, str]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_RANKING_METRIC = re.compile(r"^(mrr|ndcg)@(\d+)$")


@dataclass(frozen=True)
class TaskScore:
    """One task's score: the headline metric, how many records, how many invalid answers (and how many
    answers were cut at the generation limit), extras, the retrieval protocol, and the scoring rules that
    produced it ("ours" or "authors")."""

    task: str
    metric: str
    value: float
    count: int
    invalid: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    protocol: str | None = None
    scoring: str = "ours"
    cut: int = 0  # generated answers that reached eval.max_new_tokens before ending (scored as they are)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


class MetricResult(NamedTuple):
    """What one metric function returns: the value, the invalid-answer count and extra numbers."""

    value: float
    invalid: int
    extra: dict[str, float]


# --- parsing and normalization ----------------------------------------------------------


def normalize_text(text: str) -> str:
    """SQuAD normalization: lower case, no punctuation, no articles (a/an/the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token-level F1 on normalized tokens (both empty -> 1.0, one empty -> 0.0)."""
    pred_tokens = normalize_text(prediction).split()
    ref_tokens = normalize_text(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def parse_option(text: str | None, n_options: int, whole: bool = False) -> str | None:
    """The option letter an answer names, as the authors read it: its first non-blank character
    (case-sensitive), or with `whole` the whole stripped answer (SR); None (invalid) unless it is one of
    the first `n_options` letters A, B, ..."""
    if not isinstance(text, str):
        return None
    answer = text.strip()
    letter = answer if whole else answer[:1]
    index = OPTION_LETTERS.find(letter) if len(letter) == 1 else -1
    return letter if 0 <= index < n_options else None


def parse_yes_no(text: str | None) -> str | None:
    """"yes" or "no" when that is the whole answer (case and surrounding blanks ignored), else None."""
    if not isinstance(text, str):
        return None
    answer = text.strip().lower()
    return answer if answer in ("yes", "no") else None


def parse_triples(text: str | None) -> list[Triple | None] | None:
    """The items of an AVE answer (a JSON list): an (attribute, value, source) triple per object with
    those keys (values as text, stripped and lower-cased), None per other item (it still counts as a
    prediction, one that matches nothing). None when the answer is not a JSON list."""
    if not isinstance(text, str):
        return None
    triples = _parsed_triples(text)
    return None if triples is None else list(triples)


# The paired bootstrap scores the same answers on every draw (one task at a time: its answers and references
# fit; a bound keeps a long-lived process from holding every answer it ever scored).
@functools.lru_cache(maxsize=8_192)
def _parsed_triples(text: str) -> tuple[Triple | None, ...] | None:
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):  # a runaway generation can nest deeper than the parser goes
        return None
    if not isinstance(items, list):
        return None
    triples: list[Triple | None] = []
    for item in items:
        if isinstance(item, dict) and all(item.get(key) is not None for key in TRIPLE_KEYS):
            attribute, value, source = (str(item[key]).strip().lower() for key in TRIPLE_KEYS)
            triples.append((attribute, value, source))
        else:
            triples.append(None)
    return tuple(triples)


def _overlaps(a: str, b: str) -> bool:
    """Equal, or one contains the other (an empty string only matches an empty string)."""
    return a == b or (bool(a) and bool(b) and (a in b or b in a))


def triple_matches(predicted: Sequence[Triple | None], reference: Sequence[Triple | None]) -> int:
    """How many predicted triples match a reference triple, each reference used at most once
    (greedy, in order): same attribute, and value and source each equal or containing the other."""
    unused = [triple for triple in reference if triple is not None]
    matched = 0
    for triple in predicted:
        if triple is None:
            continue
        attribute, value, source = triple
        for i, (ref_attribute, ref_value, ref_source) in enumerate(unused):
            if attribute == ref_attribute and _overlaps(value, ref_value) and _overlaps(source, ref_source):
                del unused[i]
                matched += 1
                break
    return matched


# --- generative metrics -----------------------------------------------------------------


def check_lengths(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("nothing to score: no predictions")


def per_record(n_options: int | Sequence[int], n: int) -> list[int]:
    if isinstance(n_options, int):
        return [n_options] * n
    if len(n_options) != n:
        raise ValueError(f"{len(n_options)} option counts for {n} records")
    return list(n_options)


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def reference_letters(references: Sequence[str], n_options: list[int]) -> list[str]:
    letters = [parse_option(ref, n) for ref, n in zip(references, n_options)]
    for i, (letter, ref, n) in enumerate(zip(letters, references, n_options)):
        if letter is None:
            raise ValueError(f"reference {i} ({ref!r}) names none of the {n} options")
    return letters  # type: ignore[return-value]


def _wrong_letter(truth: str) -> str:
    """What the authors put in place of an invalid option answer: a letter that is surely wrong."""
    return "B" if truth == "A" else "A"


def _substituted(guessed: Sequence[str | None], truth: Sequence[str], wrong) -> list[str]:
    """Each invalid (None) answer replaced by a wrong label for its record (as the authors' script does,
    so an invalid answer is always an error, also a false positive of the class it is replaced by)."""
    return [g if g is not None else wrong(t) for g, t in zip(guessed, truth)]


def _class_f1(guessed: Sequence[str], truth: Sequence[str], label: str) -> tuple[float, float, float]:
    """(F1, precision, recall) of one class."""
    tp = sum(g == label and t == label for g, t in zip(guessed, truth))
    fp = sum(g == label and t != label for g, t in zip(guessed, truth))
    fn = sum(g != label and t == label for g, t in zip(guessed, truth))
    return _f1(tp, fp, fn), tp / (tp + fp) if tp + fp else 0.0, tp / (tp + fn) if tp + fn else 0.0


def accuracy(guessed: Sequence[str | None], truth: Sequence[str]) -> float:
    return sum(g == t for g, t in zip(guessed, truth)) / len(truth)


def recall_at_1(predictions: Sequence[str | None], references: Sequence[str],
                n_options: int | Sequence[int]) -> MetricResult:
    """Share of records whose answer is exactly the reference's option letter (the authors' SR rule:
    the whole answer must be a valid letter; anything else is invalid and wrong)."""
    check_lengths(predictions, references)
    counts = per_record(n_options, len(references))
    truth = reference_letters(references, counts)
    guessed = [parse_option(p, n, whole=True) for p, n in zip(predictions, counts)]
    return MetricResult(accuracy(guessed, truth), guessed.count(None), {})


def f1_yes(predictions: Sequence[str | None], references: Sequence[str]) -> MetricResult:
    """Binary F1 of the class "yes"; an invalid answer counts as the opposite of the reference (a missed
    yes, or a false yes). 0 when there is no yes anywhere."""
    check_lengths(predictions, references)
    truth = [parse_yes_no(r) for r in references]
    for i, (label, ref) in enumerate(zip(truth, references)):
        if label is None:
            raise ValueError(f"reference {i} ({ref!r}) is neither yes nor no")
    guessed = [parse_yes_no(p) for p in predictions]
    answered = _substituted(guessed, truth, lambda t: "no" if t == "yes" else "yes")
    value, precision, recall = _class_f1(answered, truth, "yes")
    extra = {"precision": precision, "recall": recall, "accuracy": accuracy(answered, truth)}
    return MetricResult(value, guessed.count(None), extra)


def macro_f1(predictions: Sequence[str | None], references: Sequence[str],
             n_options: int | Sequence[int]) -> MetricResult:
    """Macro F1 over the option letters (the answer's first character), as sklearn's
    `f1_score(average="macro")` after the authors' substitution of a wrong letter for an invalid answer:
    the classes are the letters among the references and the (substituted) answers."""
    check_lengths(predictions, references)
    counts = per_record(n_options, len(references))
    truth = reference_letters(references, counts)
    return macro_f1_of([parse_option(p, n) for p, n in zip(predictions, counts)], truth)


def macro_f1_of(guessed: Sequence[str | None], truth: Sequence[str]) -> MetricResult:
    """Macro F1 of the letters read from the answers (None: invalid) against the reference letters."""
    answered = _substituted(guessed, truth, _wrong_letter)
    classes = sorted(set(truth) | set(answered))
    per_class = [_class_f1(answered, truth, c)[0] for c in classes]
    return MetricResult(sum(per_class) / len(per_class), guessed.count(None), {"accuracy": accuracy(answered, truth)})


def triple_f1(predictions: Sequence[str | None], references: Sequence[str]) -> MetricResult:
    """Micro F1 over all records' triples: precision = matches / predicted triples, recall =
    matches / reference triples. An unparseable answer predicts no triple and counts invalid."""
    check_lengths(predictions, references)
    matched = n_predicted = n_reference = invalid = 0
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        truth = parse_triples(reference)
        if truth is None:
            raise ValueError(f"reference {i} is not a JSON list of attribute/value/source objects")
        guessed = parse_triples(prediction)
        if guessed is None:
            invalid += 1
            guessed = []
        matched += triple_matches(guessed, truth)
        n_predicted += len(guessed)
        n_reference += len(truth)
    precision = matched / n_predicted if n_predicted else 0.0
    recall = matched / n_reference if n_reference else 0.0
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return MetricResult(f1, invalid, {"precision": precision, "recall": recall})


def label_accuracy(predictions: Sequence[str | None], references: Sequence[str],
                   labels: Sequence[str]) -> MetricResult:
    """Share of answers equal to the reference label (case-insensitive); answers outside `labels`
    are invalid."""
    check_lengths(predictions, references)
    valid = {label.strip().lower() for label in labels}
    guessed = [p.strip().lower() if isinstance(p, str) else None for p in predictions]
    correct = sum(g == r.strip().lower() for g, r in zip(guessed, references))
    return MetricResult(correct / len(references), sum(g not in valid for g in guessed), {})


def check_scoring(scoring: str) -> None:
    """Refuse scoring rules other than those of EVAL_SCORINGS."""
    if scoring not in EVAL_SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}: use {' or '.join(map(repr, EVAL_SCORINGS))}")


def score_generative(task_name: str, predictions: Sequence[str | None], records: Sequence[dict],
                     scorer: BertScorer | None = None, scoring: str = "ours") -> TaskScore:
    """Score one generative task's generations against its normalized records, by the task's metric,
    with our rules or (`scoring="authors"`) those of the authors' scripts/eval.py.

    Free-text tasks get BERTScore F1 when a scorer is given (metric "bertscore_f1"), token F1
    otherwise (metric "token_f1"); extra["token_f1"] is always there. Label-set tasks get accuracy.
    """
    check_scoring(scoring)
    task = get_task(task_name)
    if task.kind is not Kind.GENERATIVE:
        raise ValueError(f"task {task.name} is an {task.kind.value} task: score it with score_retrieval")
    if len(predictions) != len(records):
        raise ValueError(f"task {task.name}: {len(predictions)} predictions but {len(records)} records")
    if not records:
        raise ValueError(f"task {task.name}: nothing to score (no records)")
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("output"), str):
            raise ValueError(f"task {task.name}: record {i} is not a normalized record with a text 'output'")
    references = [r["output"] for r in records]
    n_options = [len(r.get("options") or []) for r in records]
    try:
        metric, result = _score_by_metric(task, predictions, references, n_options, scorer, scoring)
    except ValueError as err:
        raise ValueError(f"task {task.name}: {err}") from None
    return TaskScore(task.name, metric, result.value, len(records), result.invalid, result.extra, scoring=scoring)


def _rules(scoring: str) -> dict[str, Callable[..., MetricResult]]:
    """The metrics whose rules differ between the scorings (recall@1, macro_f1, triple_f1), under `scoring`."""
    if scoring == "authors":
        from recfound.eval import authors  # imported here: it builds on this module

        return {"recall@1": authors.recall_at_1, "macro_f1": authors.macro_f1, "triple_f1": authors.triple_f1}
    return {"recall@1": recall_at_1, "macro_f1": macro_f1, "triple_f1": triple_f1}


def _score_by_metric(task: Task, predictions: Sequence[str | None], references: list[str], n_options: list[int],
                     scorer: BertScorer | None, scoring: str) -> tuple[str, MetricResult]:
    """The metric name actually used and its result, dispatched on the task's answer type and metric."""
    if task.answer_type is AnswerType.LABEL_SET:
        return "accuracy", label_accuracy(predictions, references, task.labels)
    if task.metric in ("recall@1", "macro_f1"):
        return task.metric, _rules(scoring)[task.metric](predictions, references, n_options)
    if task.metric == "f1_yes":
        return task.metric, f1_yes(predictions, references)
    if task.metric == "triple_f1":
        return task.metric, _rules(scoring)[task.metric](predictions, references)
    if task.metric == "bertscore_f1":
        texts = [p if isinstance(p, str) else "" for p in predictions]
        token = float(np.mean([token_f1(p, r) for p, r in zip(texts, references)]))
        if scorer is None:
            return "token_f1", MetricResult(token, 0, {"token_f1": token})
        bert = float(np.mean(scorer.f1(texts, references)))
        return task.metric, MetricResult(bert, 0, {"token_f1": token})
    raise ValueError(f"no generative metric called {task.metric!r} (known: recall@1, f1_yes, macro_f1, "
                     "triple_f1, bertscore_f1; or give the task answer type label_set)")


# --- retrieval metrics ------------------------------------------------------------------


def _check_ranks(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    array = np.asarray(ranks)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D sequence of integers, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(array == np.round(array)):
            raise ValueError("ranks must be integers (1-based position of the relevant document)")
        array = array.astype(np.int64)
    if array.min() < 1:
        raise ValueError(f"ranks are 1-based: got {int(array.min())}")
    return array


def mrr_at_k(ranks: Sequence[int] | np.ndarray, k: int = 20) -> float:
    """Mean reciprocal rank of the one relevant document per query, 0 past rank k (ranks 1-based)."""
    array = _check_ranks(ranks, k)
    return float(np.mean(np.where(array <= k, 1.0 / array, 0.0)))


def ndcg_at_k(ranks: Sequence[int] | np.ndarray, k: int = 20) -> float:
    """NDCG@k with one relevant document per query: mean of 1/log2(rank + 1), 0 past rank k."""
    array = _check_ranks(ranks, k)
    return float(np.mean(np.where(array <= k, 1.0 / np.log2(array + 1.0), 0.0)))


def recall_at_k(ranks: Sequence[int] | np.ndarray, k: int = 20) -> float:
    """Share of queries whose relevant document is within the top k (ranks 1-based)."""
    array = _check_ranks(ranks, k)
    return float(np.mean(array <= k))


def score_retrieval(task_name: str, ranks: Sequence[int] | np.ndarray, k: int | None = None, *,
                    protocol: str, scoring: str = "ours", skipped: int = 0) -> TaskScore:
    """Score one embedding task from the rank of each query's positive, by the task's metric
    ("mrr@20", "ndcg@20"); `k` overrides the registry's cut-off. `protocol` names how the ranks were
    obtained (e.g. sampled negatives or the full pool) and is kept in the result.

    `scoring="authors"` (ranks from `recfound.eval.authors.sampled_ranks`): MRR or NDCG without a
    cut-off, as their eval_emb.py; the `skipped` queries (left out for a NaN embedding) are counted in
    extra["skipped"], and the value is NaN ("no valid samples") when every query was left out."""
    check_scoring(scoring)
    task = get_task(task_name)
    if task.kind is not Kind.EMBEDDING:
        raise ValueError(f"task {task.name} is a {task.kind.value} task: score it with score_generative")
    match = _RANKING_METRIC.match(task.metric)
    if match is None:
        raise ValueError(f"task {task.name}: no retrieval metric called {task.metric!r} (known: mrr@K, ndcg@K)")
    if not isinstance(protocol, str) or not protocol.strip():
        raise ValueError(f"task {task.name}: name the retrieval protocol (e.g. 'sampled-19' or 'full-pool')")
    kind = match.group(1)
    if scoring == "authors":
        return _authors_retrieval(task.name, kind, ranks, protocol, skipped)
    if skipped:
        raise ValueError(f"task {task.name}: only the authors' scoring leaves queries out (got skipped={skipped})")
    if k is None:
        k = int(match.group(2))
    try:
        array = _check_ranks(ranks, k)
    except ValueError as err:
        raise ValueError(f"task {task.name}: {err}") from None
    scores = {"mrr": mrr_at_k(array, k), "ndcg": ndcg_at_k(array, k)}
    other = "ndcg" if kind == "mrr" else "mrr"
    extra = {f"recall@{k}": recall_at_k(array, k), f"{other}@{k}": scores[other]}
    return TaskScore(task.name, f"{kind}@{k}", scores[kind], int(array.size), 0, extra, protocol)


def _authors_retrieval(task: str, kind: str, ranks: Sequence[int] | np.ndarray, protocol: str,
                       skipped: int) -> TaskScore:
    """MRR and NDCG of one positive per query without a cut-off, as eval_emb.py averages 1 / rank and
    1 / log2(rank + 1)."""
    if skipped and len(ranks) == 0:
        return TaskScore(task, kind, float("nan"), 0, 0, {"skipped": float(skipped)}, protocol, "authors")
    try:
        array = _check_ranks(ranks, 1)
    except ValueError as err:
        raise ValueError(f"task {task}: {err}") from None
    scores = {"mrr": float(np.mean(1.0 / array)), "ndcg": float(np.mean(1.0 / np.log2(array + 1.0)))}
    other = "ndcg" if kind == "mrr" else "mrr"
    return TaskScore(task, kind, scores[kind], int(array.size), 0, {other: scores[other], "skipped": float(skipped)},
                     protocol, "authors")
