"""`scoring="authors"` against plain transcriptions of the authors' scripts/eval.py and scripts/eval_emb.py
(the same sklearn and numpy calls, loop for loop), on the edge cases where their rules differ from ours."""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from recfound.config import EvalSection
from recfound.eval import authors
from recfound.eval.data import CandidatePool
from recfound.eval.metrics import TaskScore, score_generative, score_retrieval
from recfound.eval.report import _table_rows, before_after_table, comparison_tables
from recfound.eval.runner import ModelEvaluation, Output, _retrieval_score
from test_eval_metrics import records, triples

# --- transcriptions of scripts/eval.py ------------------------------------------------------------


def their_sequential_recommendation(prediction_list: list[str], label_list: list[str]) -> tuple[float, int]:
    skipped = 0
    filtered_prediction_list, filtered_label_list = [], []
    valid_response = set("ABCDEFGHIJKLMNOPQRST")
    for i in range(len(prediction_list)):
        pred = prediction_list[i].strip()
        if pred in valid_response:
            filtered_prediction_list.append(pred)
        else:
            filtered_prediction_list.append("B" if label_list[i] == "A" else "A")
            skipped += 1
        filtered_label_list.append(label_list[i])
    return accuracy_score(filtered_label_list, filtered_prediction_list), skipped


def their_multiclass(prediction_list: list[str], label_list: list[str]) -> tuple[float, float, int]:
    skipped = 0
    filtered_prediction_list, filtered_label_list = [], []
    valid_response = set("ABCDE")
    for i in range(len(prediction_list)):
        pred = prediction_list[i].strip()
        if pred[0] in valid_response:
            filtered_prediction_list.append(pred[0])
        else:
            filtered_prediction_list.append("B" if label_list[i][0] == "A" else "A")
            skipped += 1
        filtered_label_list.append(label_list[i][0])
    acc = accuracy_score(filtered_label_list, filtered_prediction_list)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns of a class never predicted (and scores it 0)
        f1_macro = f1_score(filtered_label_list, filtered_prediction_list, average="macro")
    return f1_macro, acc, skipped


def their_binary(prediction_list: list[str], label_list: list[str]) -> tuple[float, int]:
    skipped = 0
    filtered_prediction_list, filtered_label_list = [], []
    for i in range(len(prediction_list)):
        pred = prediction_list[i].lower().strip()
        if pred in {"yes", "no"}:
            filtered_prediction_list.append(pred)
        else:
            filtered_prediction_list.append("no" if label_list[i] == "yes" else "yes")
            skipped += 1
        filtered_label_list.append(label_list[i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f1_yes = f1_score(filtered_label_list, filtered_prediction_list, pos_label="yes", average="binary")
    return f1_yes, skipped


def their_attribute_value_extraction(prediction_list: list[str],
                                     label_list: list[str]) -> tuple[float, float, float, int]:
    idx2pred = {}
    pred_skipped = 0
    for i in range(len(prediction_list)):
        try:
            idx2pred[i] = json.loads(prediction_list[i])
            if type(idx2pred[i]) != list:  # noqa: E721 (as written there)
                idx2pred[i] = []
        except Exception:
            idx2pred[i] = []
            pred_skipped += 1
    count_label, count_pred, hit = {}, {}, {}
    for i in range(len(label_list)):
        for label in json.loads(label_list[i]):
            count_label[label["attribute"]] = count_label.get(label["attribute"], 0) + 1
            for pred in idx2pred[i]:
                if "attribute" in pred:
                    count_pred[pred["attribute"]] = count_pred.get(pred["attribute"], 0) + 1
                if "attribute" in pred and "value" in pred and "source" in pred:
                    if type(pred) == dict and (pred["attribute"] == label["attribute"]  # noqa: E721
                                               and pred["value"] == label["value"]
                                               and pred["source"] == label["source"]):
                        hit[pred["attribute"]] = hit.get(pred["attribute"], 0) + 1
                    elif type(pred) and (pred["attribute"] == label["attribute"]) and (pred["value"] != None) \
                            and (pred["source"] != None) \
                            and ((str(pred["value"]) in str(label["value"]))
                                 or (str(label["value"]) in str(pred["value"]))) \
                            and ((pred["source"] in label["source"]) or (label["source"] in pred["source"])):
                        hit[pred["attribute"]] = hit.get(pred["attribute"], 0) + 1
    total_hit, total_count_label = sum(hit.values()), sum(count_label.values())
    total_count_pred = sum(count_pred.values())
    total_recall = total_hit / total_count_label
    total_precision = total_hit / (total_count_pred + 1e-6)
    total_f1 = (2 * total_recall * total_precision) / (total_recall + total_precision + 1e-6)
    return total_recall, total_precision, total_f1, pred_skipped


# --- generative tasks -------------------------------------------------------------------------------

FOUR = ["item a", "item b", "item c", "item d"]


def test_sr_accepts_a_to_t_whatever_the_option_count():
    refs = records("SR", ["A", "B", "C", "D", "A", "B", "C"], options=FOUR)
    # "K" is no option of 4, yet valid (and wrong) for them; "b" and "B: item b" are invalid; " C " is right
    answers = ["A", "K", " C ", "b", "B: item b", "T", "C"]
    value, invalid = their_sequential_recommendation(answers, [r["output"] for r in refs])
    score = score_generative("SR", answers, refs, scoring="authors")
    assert (score.value, score.invalid, score.scoring) == (value, invalid, "authors") == (3 / 7, 2, "authors")
    assert score_generative("SR", answers, refs).invalid == 4  # ours: K and T are no option of 4


def test_sr_reads_a_missing_answer_as_invalid():
    """Their script stops on a None answer; `authors` reads it as the empty answer, which is invalid."""
    refs = records("SR", ["A", "B"], options=FOUR)
    score = score_generative("SR", [None, "B"], refs, scoring="authors")
    assert (score.value, score.invalid) == (their_sequential_recommendation(["", "B"], ["A", "B"])[0], 1)


@pytest.mark.parametrize("task", ["SA", "PRP"])
def test_option_classes_are_a_to_e_whatever_the_option_count(task):
    options = FOUR[:3]
    refs = records(task, ["A", "B", "C", "A", "B", "C", "A", "C"], options=options)
    # "E" and "D) x" are no option of 3 but read as classes D and E; "c" is invalid; "B: item b" reads B
    answers = ["A", "E", "C", "D) x", "B: item b", "c", "A", "C"]
    f1_macro, acc, skipped = their_multiclass(answers, [r["output"] for r in refs])
    score = score_generative(task, answers, refs, scoring="authors")
    assert (score.value, score.extra["accuracy"], score.invalid) == (f1_macro, acc, skipped)
    assert skipped == 1 and score_generative(task, answers, refs).invalid == 3  # ours: E, D and c are invalid


@pytest.mark.parametrize("task", ["SA", "PRP"])
def test_an_empty_or_missing_option_answer_is_invalid(task):
    """Their script fails on an empty answer (`pred[0]`); `authors` counts it as an invalid answer, which
    their script does with any other character outside A-E."""
    refs = records(task, ["A", "B", "C", "A"], options=FOUR)
    score = score_generative(task, ["", "  ", None, "A"], refs, scoring="authors")
    f1_macro, acc, skipped = their_multiclass(["?", "?", "?", "A"], [r["output"] for r in refs])
    assert (score.value, score.extra["accuracy"], score.invalid) == (f1_macro, acc, skipped) == (f1_macro, 0.25, 3)


@pytest.mark.parametrize("task", ["AP", "PM"])
def test_yes_no_equals_their_script(task):
    refs = records(task, ["yes", "no", "yes", "no", "yes", "no"])
    answers = ["Yes", " no ", "maybe", "yes", "YES.", "No"]
    f1_yes, skipped = their_binary(answers, [r["output"] for r in refs])
    score = score_generative(task, answers, refs, scoring="authors")
    assert (score.value, score.invalid) == (pytest.approx(f1_yes, abs=1e-15), skipped)


def test_a_capitalised_yes_reference_reads_as_yes():
    """Their script compares references as written, so a "Yes" reference makes sklearn refuse (three labels
    for a binary F1); `authors` reads references case-insensitively, as our records allow them."""
    refs = records("AP", ["Yes", "no", "yes"])
    with pytest.raises(ValueError, match="multiclass"):
        their_binary(["yes", "no", "yes"], [r["output"] for r in refs])
    score = score_generative("AP", ["yes", "no", "yes"], refs, scoring="authors")
    assert score.value == their_binary(["yes", "no", "yes"], ["yes", "no", "yes"])[0] == 1.0


def ave_records(*labels: list[tuple[str, str, str]]) -> list[dict]:
    return records("AVE", [triples(*items) for items in labels])


def test_ave_counts_each_prediction_once_per_label_case_sensitive_and_empty_values_match():
    refs = ave_records(
        [("color", "red", "title"), ("color", "dark red", "description")],   # two labels of one attribute
        [("size", "10 inch", "title")],
        [],                                                      # no labels: its predictions count for nothing
        [("brand", "Acme", "title")],
        [("material", "cotton", "description")],
    )
    answers = [
        triples(("color", "red", "title and description")),       # hits both labels (containment both ways)
        json.dumps([{"attribute": "size", "value": 10, "source": "title"},  # a number, read as text: "10" in "10 inch"
                    {"attribute": "size"},                                   # counted, no value: no hit
                    {"value": "x", "source": "title"},                       # no attribute: not counted
                    "a note about size"]),                                   # text without the word: ignored
        triples(("color", "blue", "title")),
        triples(("brand", "acme", "title"), ("Brand", "Acme", "title")),  # case-sensitive: neither matches
        triples(("material", "", "")),                              # empty value and source match anything
    ]
    recall, precision, f1, skipped = their_attribute_value_extraction(answers, [r["output"] for r in refs])
    score = score_generative("AVE", answers, refs, scoring="authors")
    assert score == TaskScore("AVE", "triple_f1", f1, 5, skipped, {"precision": precision, "recall": recall},
                              scoring="authors")
    # hits: 2 (color) + 1 (size) + 0 + 0 + 1 (material) = 4 of 5 labels; predictions counted per label:
    # 2 (color, twice) + 2 (size) + 0 (no labels) + 2 (brand) + 1 = 7
    assert (recall, precision) == (4 / 5, 4 / (7 + 1e-6))


def test_ave_invalid_answers_and_non_lists():
    refs = ave_records([("color", "red", "title")], [("color", "red", "title")], [("color", "red", "title")])
    answers = ["```json [", json.dumps({"attribute": "color", "value": "red", "source": "title"}),
               triples(("color", "red", "title"))]
    recall, precision, f1, skipped = their_attribute_value_extraction(answers, [r["output"] for r in refs])
    score = score_generative("AVE", answers, refs, scoring="authors")
    # only the text that is not JSON is invalid; the object that is not in a list predicts nothing
    assert (score.value, score.invalid, score.extra) == (f1, skipped, {"precision": precision, "recall": recall})
    assert skipped == 1 and score_generative("AVE", answers, refs).invalid == 2
    missing = score_generative("AVE", [None, None, None], refs, scoring="authors")  # their script: an invalid answer
    assert (missing.value, missing.invalid) == (0.0, 3)


def test_ave_items_their_script_would_stop_on_match_nothing():
    """A number or null item, an item with a number or list source: their script fails on them; `authors`
    lets them predict nothing (the items that are not objects) or match only by equality (the source)."""
    refs = ave_records([("color", "red", "title")])
    odd = json.dumps([3, None, ["attribute"], {"attribute": "color", "value": "red", "source": 1},
                      {"attribute": "color", "value": "red", "source": ["title"]},
                      {"attribute": "color", "value": "red", "source": "title"}])
    score = score_generative("AVE", [odd], refs, scoring="authors")
    # 3 objects with an attribute are predictions, 1 hits: recall 1, precision 1/3
    assert score.extra == {"recall": 1.0, "precision": 1 / (3 + 1e-6)}
    assert score_generative("AVE", ['["x"]'], ave_records([]), scoring="authors").value == 0.0  # no labels at all


def test_free_text_and_label_tasks_score_as_ours():
    refs = records("QR", ["a red cotton shirt", "soft blue wool"])
    ours, theirs = (score_generative("QR", ["the red shirt for men", None], refs, scoring=scoring)
                    for scoring in ("ours", "authors"))
    assert (theirs.value, theirs.metric, theirs.scoring) == (ours.value, ours.metric, "authors")


def test_unknown_scoring_is_refused():
    with pytest.raises(ValueError, match="unknown scoring 'paper': use 'ours' or 'authors'"):
        score_generative("QR", ["x"], records("QR", ["y"]), scoring="paper")
    with pytest.raises(ValueError, match="task Q2I: only the authors' scoring leaves queries out"):
        score_retrieval("Q2I", [1], protocol="sampled", skipped=2)


# --- transcription of scripts/eval_emb.py -----------------------------------------------------------


def compute_cosine_similarity(a, b):
    return np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))


def compute_ndcg(similarities, labels):
    sorted_indices = np.argsort(similarities)[::-1]
    dcg = 0.0
    for i, idx in enumerate(sorted_indices):
        dcg += labels[idx] / np.log2(i + 2)
    ideal_sorted_indices = np.argsort(labels)[::-1]
    idcg = 0.0
    for i, idx in enumerate(ideal_sorted_indices):
        idcg += labels[idx] / np.log2(i + 2)
    return dcg / idcg if idcg > 0 else 0.0


def their_scores(item_task: bool, queries, positives, negative_groups) -> tuple[float, int]:
    """evaluate_results for one task; for I2I each query's negative group is its sampled negatives, of which
    their script takes negative_embeddings[0][:5]."""
    skipped, score = 0, []
    for query_emb, pos_emb, negative_embeddings in zip(queries, positives, negative_groups):
        if not item_task:
            sample_pool = [pos_emb] + list(negative_embeddings)
            if np.isnan(sample_pool).any() or np.isnan(query_emb).any():
                skipped += 1
                continue
            similarities = [compute_cosine_similarity(query_emb, sample) for sample in sample_pool]
            sorted_indices = np.argsort(similarities)[::-1]
            rank_of_pos = np.where(sorted_indices == 0)[0][0] + 1
            score.append(1.0 / rank_of_pos)
        else:
            positive_embeddings, negatives = pos_emb[None, :], np.asarray(negative_embeddings)[:5]
            sample_pool = np.vstack((positive_embeddings, negatives))
            labels = np.concatenate([np.ones(positive_embeddings.shape[0]), np.zeros(negatives.shape[0])])
            similarities = [compute_cosine_similarity(query_emb, sample) for sample in sample_pool]
            score.append(compute_ndcg(similarities, labels))
    return (np.mean(score) if score else float("nan")), skipped


def embedding_case(seed: int):
    """Queries and documents with ties: several documents repeat the positive's vector exactly (or a
    multiple of it), one document is zero (a NaN cosine), one query and one document hold a NaN."""
    rng = np.random.default_rng(seed)
    documents = rng.normal(size=(40, 6)).astype(np.float32)
    documents[10:16] = documents[0]           # exact copies of document 0
    documents[16] = 2 * documents[0]          # the same direction, another length
    documents[17] = 0.0                       # a zero vector: NaN similarity
    documents[18, 2] = np.nan                 # a broken embedding
    queries = rng.normal(size=(12, 6)).astype(np.float32)
    queries[1] = documents[0]
    queries[5, 0] = np.nan
    pick = random.Random(seed)
    candidates = []
    for q in range(len(queries)):
        positive = 0 if q % 3 == 0 else pick.randrange(20, 40)
        negatives = pick.sample([i for i in range(40) if i not in (positive, *range(10, 19))], 19)
        if q % 3 == 0:  # ties with the positive among the first five (I2I's pool) and later
            negatives[:3] = [10, 11, 16]
            negatives[7:10] = [12, 13, 14]
        if q == 4:
            negatives[2] = 18  # NaN: Q2I and U2I leave the query out, I2I ranks it
        if q == 7:
            negatives[3] = 17  # a zero vector
        candidates.append([positive, *negatives])
    return queries, documents, candidates


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", ["Q2I", "U2I", "I2I"])
def test_retrieval_equals_their_eval_emb(task, seed):
    queries, documents, candidates = embedding_case(seed)
    item_task = task == "I2I"
    wide = documents.astype(np.float64)  # their embeddings come back from JSON as float64
    with np.errstate(invalid="ignore"):  # a zero vector's 0 / 0 (their script lets numpy warn)
        expected, skipped = their_scores(item_task, queries.astype(np.float64), [wide[row[0]] for row in candidates],
                                         [wide[row[1:]] for row in candidates])
    ranks, left_out, negatives = authors.sampled_ranks(task, queries, documents, candidates)
    score = score_retrieval(task, ranks, protocol="sampled", scoring="authors", skipped=left_out)
    assert (score.value, left_out, negatives) == (expected, skipped, 5 if item_task else 19)
    assert (score.metric, score.count, score.scoring) == ("ndcg" if item_task else "mrr", 12 - skipped, "authors")
    assert score.extra["skipped"] == skipped == (0 if item_task else 2)


def test_every_query_left_out_is_no_valid_sample():
    score = score_retrieval("U2I", np.zeros(0, dtype=np.int64), protocol="sampled", scoring="authors", skipped=3)
    assert (np.isnan(score.value), score.count, score.extra) == (True, 0, {"skipped": 3.0})


def test_the_runner_scores_the_sampled_protocol_their_way_and_the_full_pool_ours():
    queries, documents, candidates = embedding_case(1)
    pool = CandidatePool("I2I", tuple(f"doc {i}" for i in range(40)), tuple(row[0] for row in candidates))
    output = Output(queries={"I2I": queries}, documents={"I2I": documents})
    options = EvalSection(scoring="authors")
    sampled, sampled_ranks = _retrieval_score("I2I", pool, output, (candidates, 0.5), options)
    assert (sampled.scoring, sampled.metric, sampled.protocol) == \
        ("authors", "ndcg", "sampled (the first 5 of 19 negatives, 50% same-category)")
    assert sampled.value == pytest.approx(float(np.mean(1.0 / np.log2(np.asarray(sampled_ranks) + 1.0))))
    full, full_ranks = _retrieval_score("I2I", pool, output, None, options)
    assert (full.scoring, full.metric, len(full_ranks)) == ("ours", "ndcg@20", full.count)


def test_reports_and_the_mlflow_table_name_the_scoring():
    before = ModelEvaluation("base", {"SR": TaskScore("SR", "recall@1", 0.2, 5, scoring="authors")})
    after = ModelEvaluation("trained", {"SR": TaskScore("SR", "recall@1", 0.4, 5, scoring="authors")})
    assert "recall@1 [authors]" in before_after_table(before, after)
    assert "SR recall@1 [authors]" in comparison_tables([before, after])
    mixed = ModelEvaluation("other", {"SR": TaskScore("SR", "recall@1", 0.3, 5)})
    assert "(mixed: recall@1; recall@1 [authors])" in comparison_tables([before, mixed])
    rows = _table_rows({"test": after, "other": mixed})
    assert rows["scoring"] == ["authors", "ours"]
