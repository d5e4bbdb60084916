"""Full-catalog evaluation (`recfound.eval.catalog`) on the ML-100K fixture built by `recfound data build`:
the targets and the items left out against the hand-worked sequences, the baselines' ranks and SR answers
worked out by hand, a tiny model's U2I ranks against a float64 brute force over the catalog, the report
naming where a model is below a baseline, the MLflow logging and `recfound eval run`."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest

from recfound.cli import main
from recfound.config import EvalSection
from recfound.data.logs.build import build_logs
from recfound.data.records import OPTION_LETTERS
from recfound.eval.catalog import load_catalog
from recfound.eval.data import CandidatePool, load_split
from recfound.eval.metrics import TaskScore
from recfound.eval.report import below_baselines, catalog_report, log_evaluations
from recfound.eval.runner import ModelEvaluation, evaluate_model
from recfound.eval.source import ModelSource
from recfound.task_file import load_root_tasks
from test_eval_runner import make_run
from test_logs_build import BUILDS, ML100K

OPTIONS = EvalSection(max_new_tokens=2, batch_size=4, scorer="none", workers=0, protocol="full")

# The fixture's train interactions (ML100K's sequences less their last two items): user 1: 1 2 3, user 2: 1 2,
# user 3: 3 5. Counts: items 1, 2, 3: 2; item 5: 1; items 4, 6, 7, 8: 0.
POPULARITY = {"1": 2, "2": 2, "3": 2, "5": 1}
# Cosine over the users: sim(1,2) = 2/2, sim(1,3) = sim(2,3) = 1/2, sim(3,5) = 1/sqrt(2); summed over the
# test target's history (the user's items before it):
KNN = {"1": {"5": 1 / math.sqrt(2)},  # history 1 2 3 4
       "2": {"3": 1.0},  # history 1 2 6: sim(1,3) + sim(2,3)
       "3": {"1": 0.5, "2": 0.5, "3": 1 / math.sqrt(2), "5": 1 / math.sqrt(2)}}  # history 3 5 8
# Test targets (each user's last item) and their ranks among the items the user had not seen, ties counting
# against the target: user 1: item 5 (1 / 0.71) above 6, 7, 8 (0) -> 1 by both; user 2: item 7 (0) level with
# 4, 5, 8 and below 3 -> 5 by both; user 3: item 1 level with item 2 -> 2 by both.
RANKS = {"1": 1, "2": 5, "3": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The ML-100K fixture built into <tmp>/data, its tasks registered while the module runs."""
    from recfound import tasks

    saved = dict(tasks._REGISTRY)
    root = tmp_path_factory.mktemp("catalog")
    source, path, meta, _ = BUILDS["ml-100k"]
    build_logs(source, path, root / "data", meta=meta)
    load_root_tasks(root / "data")
    yield root
    tasks._REGISTRY.clear()
    tasks._REGISTRY.update(saved)


def item_ids(root) -> dict[str, str]:
    """card -> item id, from items.jsonl."""
    lines = (root / "data" / "items.jsonl").read_text(encoding="utf-8").splitlines()
    return {item["card"]: item["id"] for item in map(json.loads, lines)}


def test_targets_and_left_out_items_follow_the_split(built):
    data = load_split(built / "data", "test", ["U2I", "SR", "MIM"])
    catalog = load_catalog(built / "data", "test", data)
    ids = list(item_ids(built).values())
    assert set(catalog.targets) == {"U2I", "SR"} and len(catalog.cards) == 8
    for task, targets in catalog.targets.items():
        users = [record["id"].split("#")[0] for record in data[task]]
        assert [ids[i] for i in targets.positives] == [ML100K[u][-1] for u in users]
        assert [[ids[i] for i in seen] for seen in targets.seen] == [ML100K[u][:-1] for u in users]
    val = load_split(built / "data", "val", ["U2I"])
    targets = load_catalog(built / "data", "val", val).targets["U2I"]
    users = [record["id"].split("#")[0] for record in val["U2I"]]
    assert [[ids[i] for i in seen] for seen in targets.seen] == [ML100K[u][:-2] for u in users]
    # Not built from logs, or no ranking task: no catalog.
    assert load_catalog(built / "data", "test", {"MIM": data["MIM"]}) is None


def option_rank(record: dict, scores: dict[str, float], ids: dict[str, str]) -> int:
    values = [scores.get(ids[card], 0.0) for card in record["options"]]
    answer = values[OPTION_LETTERS.index(record["output"])]
    return sum(value >= answer for value in values)


def test_baselines_by_hand(built):
    data = load_split(built / "data", "test", ["U2I", "SR"])
    baselines = load_catalog(built / "data", "test", data).baselines(k=20)
    assert list(baselines) == ["popularity", "item-kNN"]
    ids = item_ids(built)
    for name, baseline in baselines.items():
        for task in ("U2I", "SR"):
            ranks = [RANKS[record["id"].split("#")[0]] for record in data[task]]
            score = baseline.retrieval["catalog"][task]
            assert score.count == len(ranks) and score.metric == "mrr@20"
            assert score.value == pytest.approx(np.mean([1 / r for r in ranks]))
            assert score.extra["recall@10"] == 1.0
            assert score.extra["ndcg@10"] == pytest.approx(np.mean([1 / math.log2(r + 1) for r in ranks]))
        hits = [option_rank(r, POPULARITY if name == "popularity" else KNN[r["id"].split("#")[0]], ids) == 1
                for r in data["SR"]]
        assert baseline.generative["SR"].value == pytest.approx(np.mean(hits))
        assert baseline.generative["SR"].protocol == "options (5)"


def brute_force_ranks(source: ModelSource, records: list[dict], cards: list[str], ids: list[str]) -> list[int]:
    """Float64 cosine of each query against every card; the user's earlier items left out."""
    with source.opened() as model:
        queries = np.asarray(model.embed_queries(records), dtype=np.float64)
        documents = np.asarray(model.embed_documents(cards, "U2I"), dtype=np.float64)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    ranks = []
    for query, record in zip(queries, records):
        sequence = ML100K[record["id"].split("#")[0]]
        target, seen = ids.index(sequence[-1]), {ids.index(i) for i in sequence[:-1]}
        scores = documents @ query
        ranks.append(1 + sum(scores[j] >= scores[target] for j in range(len(ids)) if j != target and j not in seen))
    return ranks


def test_the_model_ranks_the_whole_catalog(built, tmp_path):
    run = make_run(built, "catalog-run", "tmole")
    data = load_split(built / "data", "test", ["U2I", "SR"])
    catalog = load_catalog(built / "data", "test", data)
    source = ModelSource.from_run(run, "merged")
    evaluation = evaluate_model(source, data, OPTIONS, catalog=catalog)
    ids = list(item_ids(built).values())
    ranks = brute_force_ranks(source, data["U2I"], list(catalog.cards), ids)
    score = evaluation.retrieval["catalog"]["U2I"]
    assert score.value == pytest.approx(np.mean([1 / r for r in ranks]))
    assert score.extra["ndcg@10"] == pytest.approx(np.mean([1 / math.log2(r + 1) for r in ranks]))
    assert score.protocol == "full catalog (8 items; each user's earlier items left out)"
    # The full pool is still the records' documents, SR the option letter; no catalog score for SR.
    pool = CandidatePool.of("U2I", data["U2I"])
    assert evaluation.retrieval["full"]["U2I"].protocol == f"full pool ({len(pool.documents)})"
    assert set(evaluation.retrieval["catalog"]) == {"U2I"} and evaluation.generative["SR"].metric == "recall@1"

    baselines = list(catalog.baselines(k=20).values())
    lines = catalog_report([evaluation], baselines).splitlines()
    assert lines[0] == "Full catalog (8 items; each user's earlier items left out): the models beside the baselines"
    assert [line.split()[0] for line in lines[3:6]] == ["catalog-run:merged", "popularity", "item-kNN"]
    assert lines[6:] == (below_baselines(evaluation, baselines)
                         or ["catalog-run:merged is below no baseline on any metric they share"])

    # The CLI prints the same table beside Tables 2 and 3, and writes the baselines.
    main(["eval", "run", str(run), "--data", str(built / "data"), "--tasks", "U2I", "SR", "--scorer", "none",
          "--workers", "0", "--protocol", "full", "--max-new-tokens", "2", "--out", str(tmp_path / "out")])
    written = json.loads((tmp_path / "out" / "baselines.json").read_text(encoding="utf-8"))
    assert set(written) == {"popularity", "item-kNN"}
    assert "item-kNN" in (tmp_path / "out" / "tables.txt").read_text(encoding="utf-8")


def scored(label: str, u2i: tuple[float, float, float] | None, sr: float) -> ModelEvaluation:
    """A model or baseline with the given U2I (recall@10, ndcg@10, mrr@20) and SR recall@1."""
    evaluation = ModelEvaluation(label, {"SR": TaskScore("SR", "recall@1", sr, 4)})
    if u2i is not None:
        recall, ndcg, mrr = u2i
        evaluation.retrieval["catalog"] = {"U2I": TaskScore("U2I", "mrr@20", mrr, 4, 0,
                                                            {"recall@10": recall, "ndcg@10": ndcg}, "full catalog")}
    return evaluation


def test_the_report_says_where_a_model_is_below_a_baseline(tmp_path):
    model = scored("trained", (0.5, 0.4, 0.3), 0.25)
    popularity = scored("popularity", (0.6, 0.4, 0.2), 0.25)
    knn = scored("item-kNN", (0.5, 0.3, 0.2), 0.5)
    assert below_baselines(model, [popularity, knn]) == [
        "trained is below popularity on U2I recall@10 (0.5000 < 0.6000)",
        "trained is below item-kNN on SR recall@1 (0.2500 < 0.5000)"]
    better = scored("base", (0.7, 0.5, 0.4), 0.75)
    report = catalog_report([model, better], [popularity, knn])
    lines = report.splitlines()
    assert lines[1].split() == ["model", "U2I", "recall@10", "U2I", "ndcg@10", "U2I", "mrr@20", "SR", "recall@1"]
    assert lines[3].split() == ["trained", "0.5000", "0.4000", "0.3000", "0.2500"]
    assert lines[-1] == "base is below no baseline on any metric they share"

    # MLflow: the baselines' metrics beside the model's, and a tag naming where it is below.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("catalog")).info.run_id
    log_evaluations(uri, run_id, {"test": model}, {"test_popularity": popularity, "test_item-kNN": knn})
    run = client.get_run(run_id)
    assert run.data.metrics["test_catalog/U2I_recall_at_10"] == 0.5
    assert run.data.metrics["test_popularity_catalog/U2I_recall_at_10"] == 0.6
    assert run.data.metrics["test_item-kNN/SR"] == 0.5 and run.data.metrics["test/SR"] == 0.25
    assert run.data.tags["below_baselines"].startswith("trained is below popularity on U2I recall@10")
    files = {item.path for item in client.list_artifacts(run_id, "evaluation")}
    assert "evaluation/baselines.json" in files
