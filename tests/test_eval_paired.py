"""The paired bootstrap of a training run's before/after changes (recfound.eval.paired), against the same
bootstrap written out plainly here: numpy's default_rng draws, each metric by its formula, the quantile by
linear interpolation between order statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recfound.eval.metrics import TaskScore, score_generative, score_retrieval, token_f1
from recfound.eval.paired import MIN_RECORDS, RememberingScorer, change_intervals, paired_interval, verdicts
from recfound.eval.report import before_after_table, noise_line
from recfound.eval.runner import ModelEvaluation

PROTOCOL = "sampled (19 negatives, 50% same-category)"


def plain_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def plain_bootstrap(size: int, change_on, draws: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    changes = [change_on([int(i) for i in rng.integers(0, size, size)]) for _ in range(draws)]
    return plain_quantile(changes, 0.025), plain_quantile(changes, 0.975)


def plain_mrr(ranks: list[int], k: int = 20) -> float:
    return sum(1.0 / r if r <= k else 0.0 for r in ranks) / len(ranks)


def plain_f1_yes(answers: list[str], references: list[str]) -> float:
    tp = sum(a == "yes" and r == "yes" for a, r in zip(answers, references))
    fp = sum(a == "yes" and r == "no" for a, r in zip(answers, references))
    fn = sum(a == "no" and r == "yes" for a, r in zip(answers, references))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_the_interval_is_the_plain_percentile_bootstrap_of_paired_means():
    rng = np.random.default_rng(7)
    before, after = rng.random(23), rng.random(23) + 0.1
    interval = paired_interval(23, lambda idx: float(before[idx].mean()), lambda idx: float(after[idx].mean()),
                               draws=400, seed=3)
    expected = plain_bootstrap(23, lambda idx: sum(after[i] - before[i] for i in idx) / len(idx), 400, 3)
    assert interval == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="at least one record"):
        paired_interval(0, lambda idx: 0.0, lambda idx: 0.0)


def retrieval_evaluation(label: str, task: str, ranks: list[int], scoring: str = "ours",
                         skipped: int = 0) -> ModelEvaluation:
    score = score_retrieval(task, np.asarray(ranks), 20, protocol=PROTOCOL, scoring=scoring, skipped=skipped)
    return ModelEvaluation(label, retrieval={"sampled": {task: score}},
                           ranks={"sampled": {task: np.asarray(ranks)}})


def test_retrieval_changes_resample_the_same_queries_for_both_models():
    rng = np.random.default_rng(11)
    before_ranks, after_ranks = [int(r) for r in rng.integers(1, 30, 40)], [int(r) for r in rng.integers(1, 12, 40)]
    before, after = (retrieval_evaluation(label, "Q2I", ranks)
                     for label, ranks in (("base", before_ranks), ("trained", after_ranks)))
    intervals = change_intervals(before, after, {}, 20, draws=300, seed=5)
    expected = plain_bootstrap(40, lambda idx: plain_mrr([after_ranks[i] for i in idx])
                               - plain_mrr([before_ranks[i] for i in idx]), 300, 5)
    assert intervals["Q2I"] == pytest.approx(expected, abs=1e-12)


def test_a_corpus_metric_is_recomputed_on_each_draw_and_a_mean_metric_averaged():
    rng = np.random.default_rng(2)
    references = ["yes" if rng.random() < 0.5 else "no" for _ in range(30)]
    before_answers = ["yes" if rng.random() < 0.5 else "no" for _ in range(30)]
    after_answers = [r if rng.random() < 0.8 else ("no" if r == "yes" else "yes") for r in references]
    words = ["red", "pan", "steel", "large", "the", "cotton", "mug", "blue"]
    texts = [" ".join(rng.choice(words, 4)) for _ in range(90)]
    qr_records = [{"input": "q", "output": text} for text in texts[:30]]
    qr_before, qr_after = texts[30:60], [r["output"] if i % 3 else texts[60 + i] for i, r in enumerate(qr_records)]
    ap_records = [{"input": "q", "output": r} for r in references]
    data = {"AP": ap_records, "QR": qr_records}
    models = []
    for label, ap, qr in (("base", before_answers, qr_before), ("trained", after_answers, qr_after)):
        models.append(ModelEvaluation(label, generative={"AP": score_generative("AP", ap, ap_records),
                                                         "QR": score_generative("QR", qr, qr_records)},
                                      answers={"AP": ap, "QR": qr}))
    intervals = change_intervals(models[0], models[1], data, 20, draws=200, seed=9)
    expected_ap = plain_bootstrap(30, lambda idx: plain_f1_yes([after_answers[i] for i in idx], [references[i] for i in idx])
                                  - plain_f1_yes([before_answers[i] for i in idx], [references[i] for i in idx]), 200, 9)
    per_record = [token_f1(a, r["output"]) - token_f1(b, r["output"])
                  for a, b, r in zip(qr_after, qr_before, qr_records)]
    expected_qr = plain_bootstrap(30, lambda idx: sum(per_record[i] for i in idx) / len(idx), 200, 9)
    assert intervals["AP"] == pytest.approx(expected_ap, abs=1e-12)
    assert intervals["QR"] == pytest.approx(expected_qr, abs=1e-12)
    assert models[1].generative["AP"].value > models[0].generative["AP"].value and intervals["AP"][0] > 0


def test_verdicts_the_table_column_and_the_summary_line():
    better = (retrieval_evaluation("base", "Q2I", [5] * 12), retrieval_evaluation("trained", "Q2I", [1] * 12))
    same = (retrieval_evaluation("base", "I2I", [2, 3] * 6), retrieval_evaluation("trained", "I2I", [2, 3] * 6))
    worse = (retrieval_evaluation("base", "U2I", [1] * 12), retrieval_evaluation("trained", "U2I", [2] * 12))
    intervals = {}
    for before, after in (better, same, worse):
        intervals.update(change_intervals(before, after, {}, 20, draws=50))
    assert intervals == {"Q2I": pytest.approx((0.8, 0.8)), "I2I": (0.0, 0.0), "U2I": pytest.approx((-0.5, -0.5))}
    assert verdicts(intervals) == {"better": ["Q2I"], "worse": ["U2I"], "within noise": ["I2I"]}
    assert noise_line(intervals) == ("paired bootstrap of the 3 tasks' test records (95%): better on 1, "
                                     "worse on 1 (U2I), within noise on 1 (I2I)")
    table = before_after_table(*better, {"Q2I": intervals["Q2I"]})
    assert "95% interval" in table.splitlines()[0] and "[+0.800, +0.800]" in table
    assert "95% interval" not in before_after_table(*better)


def test_no_interval_without_pairs_or_with_too_few_records():
    ranks = [1, 2, 3] * 4
    # the authors' scoring left a query out of one model's ranks: the queries no longer pair
    before = retrieval_evaluation("base", "Q2I", ranks, scoring="authors", skipped=1)
    after = retrieval_evaluation("trained", "Q2I", [1] * 12, scoring="authors")
    assert change_intervals(before, after, {}, 20, draws=20) == {}
    # ... while with nothing left out the same scoring gets one (MRR without a cut-off, as theirs)
    both = change_intervals(retrieval_evaluation("base", "Q2I", ranks, scoring="authors"), after, {}, 20, draws=20)
    assert set(both) == {"Q2I"} and both["Q2I"][0] > 0
    missing = ModelEvaluation("trained", retrieval={"sampled": {"Q2I": TaskScore("Q2I", "mrr@20", 0.5, 12)}})
    assert change_intervals(retrieval_evaluation("base", "Q2I", ranks), missing, {}, 20, draws=20) == {}
    few = (retrieval_evaluation("base", "Q2I", [5] * (MIN_RECORDS - 1)),
           retrieval_evaluation("trained", "Q2I", [1] * (MIN_RECORDS - 1)))
    assert change_intervals(*few, {}, 20, draws=20) == {}
    records = [{"input": "q", "output": "yes"}] * (MIN_RECORDS - 1)
    answers = ["yes"] * (MIN_RECORDS - 1)
    generative = [ModelEvaluation(label, generative={"AP": score_generative("AP", answers, records)},
                                  answers={"AP": answers}) for label in ("base", "trained")]
    assert change_intervals(*generative, {"AP": records}, 20, draws=20) == {}


def test_a_failed_bootstrap_costs_the_intervals_only(capsys):
    from recfound.config import EvalSection
    from recfound.eval.job import bootstrap_changes

    records = [{"input": "q", "output": "yes"}] * 12
    scored = {"AP": score_generative("AP", ["yes"] * 12, records)}
    broken_base = ModelEvaluation("base", generative=scored)  # its answers are missing
    trained = ModelEvaluation("trained", generative=scored, answers={"AP": ["yes"] * 12})
    assert bootstrap_changes(broken_base, trained, EvalSection(), {"AP": records}, None, 0) == {}
    assert "warning: the paired bootstrap of the changes failed (KeyError" in capsys.readouterr().out
    base = ModelEvaluation("base", generative=scored, answers={"AP": ["yes"] * 12})
    assert bootstrap_changes(None, trained, EvalSection(), {"AP": records}, None, 0) == {}  # no base evaluated
    assert bootstrap_changes(base, trained, EvalSection(bootstrap_draws=0), {"AP": records}, None, 0) == {}
    assert bootstrap_changes(base, trained, EvalSection(bootstrap_draws=50), {"AP": records}, None, 0) == {
        "AP": (0.0, 0.0)}
    assert "paired bootstrap of 1 tasks' changes (50 draws of the records)" in capsys.readouterr().out


def test_the_remembering_scorer_scores_each_pair_once_with_the_scorers_values():
    from recfound.eval.bertscore import BertScorer

    class Counting(BertScorer):
        pairs = 0

        def f1(self, candidates, references):
            Counting.pairs += len(candidates)
            return super().f1(candidates, references)

    inner = Counting()
    remembering = RememberingScorer(inner)
    candidates, references = ["a red pan", "a blue mug", "a red pan"], ["red pan", "blue cup", "red pan"]
    first = remembering.f1(candidates, references)
    again = remembering.f1(candidates[::-1], references[::-1])
    assert Counting.pairs == 2 and again == first[::-1]
    assert first == pytest.approx(inner.f1(candidates, references), abs=1e-6)
    # The bootstrap of a BERTScore task reuses the evaluation's scores: no pair is scored again, and the
    # interval is the plain bootstrap of the per-record differences of those scores.
    words = ["red pan", "blue mug", "steel pot", "cotton towel", "large bowl", "the mug"]
    records = [{"input": "q", "output": words[i % 6]} for i in range(12)]
    answers = {"base": [words[(i + 1) % 6] for i in range(12)], "trained": [words[i % 6] if i % 4 else "x"
                                                                          for i in range(12)]}
    models = [ModelEvaluation(label, generative={"QR": score_generative("QR", answers[label], records, remembering)},
                              answers={"QR": answers[label]}) for label in ("base", "trained")]
    scored = Counting.pairs
    intervals = change_intervals(*models, {"QR": records}, 20, remembering, draws=100, seed=4)
    assert Counting.pairs == scored and models[0].generative["QR"].metric == "bertscore_f1"
    each = {label: remembering.f1(answers[label], [r["output"] for r in records]) for label in answers}
    expected = plain_bootstrap(12, lambda idx: sum(each["trained"][i] - each["base"][i] for i in idx) / len(idx),
                               100, 4)
    assert intervals["QR"] == pytest.approx(expected, abs=1e-9)
