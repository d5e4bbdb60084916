"""How sure a before/after change is: a paired bootstrap over the test records.

A small test split moves a metric by chance alone (which records were drawn), so a training job's
"better than the base" needs its noise beside it. For each task evaluated for both models,
the records are drawn with replacement `draws` times (the same draw for both models: paired), the task's
metric is computed for each model on the drawn records exactly as on the whole split (the same scoring
rules, k and protocol; corpus-level metrics such as macro F1 are recomputed, not averaged), and the
central `level` share of the after-minus-before changes is the interval (a percentile interval: with
few records it covers somewhat less than `level`; below MIN_RECORDS records there is none). An interval
above 0 says the change is unlikely to be only the luck of the draw of these records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from recfound.eval.metrics import score_generative, score_retrieval
from recfound.tasks import Kind, get_task

if TYPE_CHECKING:
    from recfound.eval.bertscore import BertScorer
    from recfound.eval.runner import ModelEvaluation

DRAWS = 1000
LEVEL = 0.95
MIN_RECORDS = 10  # fewer: every draw repeats the same few records, and the interval says nothing
TOLERANCE = 1e-9  # a bound this close to 0 is 0 (summation order can leave 1e-17 where no change is)

Interval = tuple[float, float]
ValueOn = Callable[[np.ndarray], float]  # a model's metric on the records at these indices


def paired_interval(size: int, before: ValueOn, after: ValueOn, draws: int = DRAWS, seed: int = 0,
                    level: float = LEVEL) -> Interval:
    """The central `level` interval of after(idx) - before(idx) over `draws` draws of `size` indices
    with replacement (numpy's default_rng(seed), one `integers(0, size, size)` per draw)."""
    if size < 1:
        raise ValueError("a paired bootstrap needs at least one record")
    rng = np.random.default_rng(seed)
    changes = np.empty(draws)
    for draw in range(draws):
        idx = rng.integers(0, size, size)
        changes[draw] = after(idx) - before(idx)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(changes, [tail, 1.0 - tail])
    return float(low), float(high)


class RememberingScorer:
    """A BERTScore scorer that scores each (candidate, reference) pair once and remembers it: given to the
    evaluation and then to `change_intervals`, the draws reuse the evaluation's own scores."""

    def __init__(self, scorer: BertScorer) -> None:
        self.scorer, self.known = scorer, {}

    def f1(self, candidates: list[str], references: list[str]) -> list[float]:
        pairs = list(zip(candidates, references))
        new = list(dict.fromkeys(pair for pair in pairs if pair not in self.known))
        if new:
            self.known.update(zip(new, self.scorer.f1([c for c, _ in new], [r for _, r in new]), strict=True))
        return [self.known[pair] for pair in pairs]


# Metrics that are the mean of a value per record: scored once per record, then averaged per draw (the
# free-text ones are the slow ones to recompute). The others (F1 over a set of answers) are recomputed.
MEAN_OF_RECORDS = ("bertscore_f1", "token_f1")


def _generative_value(task: str, metric: str, answers: Sequence[str | None], records: Sequence[dict],
                      scorer: RememberingScorer | None, scoring: str) -> ValueOn:
    def on(idx: Sequence[int]) -> float:
        return score_generative(task, [answers[i] for i in idx], [records[i] for i in idx],
                                scorer, scoring).value  # type: ignore[arg-type]

    if metric in MEAN_OF_RECORDS:
        on(range(len(records)))  # the scorer encodes every pair in one batch and remembers each
        each = np.array([on([i]) for i in range(len(records))])
        return lambda idx: float(each[idx].mean())
    return on


def _retrieval_value(task: str, ranks: np.ndarray, k: int, protocol: str, scoring: str) -> ValueOn:
    return lambda idx: score_retrieval(task, ranks[idx], k, protocol=protocol, scoring=scoring).value


def change_intervals(before: ModelEvaluation, after: ModelEvaluation, data: Mapping[str, Sequence[dict]],
                     k: int, scorer: BertScorer | RememberingScorer | None = None, draws: int = DRAWS, seed: int = 0,
                     level: float = LEVEL) -> dict[str, Interval]:
    """{task: the interval of its headline change} for every task both evaluations scored on the same
    records (`data`: the split they were scored on; `k` and `scorer` as the evaluation had them: the
    `RememberingScorer` the evaluation used spares scoring its pairs again). A task
    whose records cannot be paired (the authors' scoring left different queries out for a NaN
    embedding), or that has fewer than MIN_RECORDS, has none."""
    remembered = scorer if scorer is None or isinstance(scorer, RememberingScorer) else RememberingScorer(scorer)
    old, new = before.headline(), after.headline()
    intervals = {}
    for task, score in new.items():
        if task not in old:
            continue
        if get_task(task).kind is Kind.GENERATIVE:
            records = data[task]
            if len(records) < MIN_RECORDS:
                continue
            values = [_generative_value(task, score.metric, model.answers[task], records, remembered, score.scoring)
                      for model in (before, after)]
            size = len(records)
        else:
            ranks = [model.ranks.get(model.headline_protocol(), {}).get(task) for model in (before, after)]
            left_out = old[task].extra.get("skipped", 0) or score.extra.get("skipped", 0)
            if left_out or any(r is None or len(r) < MIN_RECORDS for r in ranks) or len(ranks[0]) != len(ranks[1]):
                continue
            values = [_retrieval_value(task, r, k, score.protocol, score.scoring) for r in ranks]
            size = len(ranks[0])
        intervals[task] = paired_interval(size, values[0], values[1], draws, seed, level)
    return intervals


def verdicts(intervals: Mapping[str, Interval]) -> dict[str, list[str]]:
    """{"better": tasks whose interval lies above 0, "worse": below 0, "within noise": the rest}."""
    out: dict[str, list[str]] = {"better": [], "worse": [], "within noise": []}
    for task, (low, high) in intervals.items():
        out["better" if low > TOLERANCE else "worse" if high < -TOLERANCE else "within noise"].append(task)
    return out
