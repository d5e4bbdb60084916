"""The evaluation runner on real tiny models: candidate pools, ranks against brute force, batched inference
against one record at a time, Ray-sharded evaluation against in-process, reports, MLflow round trip, CLI."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from recfound.cli import main
from recfound.config import EvalSection, RunConfig, save_config
from recfound.data.corpus_text import corpus_texts
from recfound.data.synth import synthesize
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.eval.data import CandidatePool, category_of, load_split
from recfound.eval.metrics import TaskScore, mrr_at_k, score_generative
from recfound.eval.report import (average_ranks, before_after_table, comparison_tables, evaluation_metrics,
                                  evaluation_tables, improved_tasks, log_evaluations, read_logged_evaluations)
from recfound.eval.retrieval import full_pool_ranks, sampled_ranks
from recfound.eval.runner import ModelEvaluation, evaluate_model
from recfound.eval.source import ModelSource
from recfound.eval.commands import compare_runs
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.inference import Inference, InferenceOptions
from recfound.model.state import save_adapter
from recfound.tasks import Kind, get_task, task_names
from test_model_tmole import randomise
from test_tracking import greedy_new_tokens

OPTIONS = EvalSection(max_records=6, max_new_tokens=6, batch_size=4, scorer="none", workers=0,
                      sampled_negatives=5)
EOS_SCALE = 10.0  # on the tiny corpus's test records: some answers end within 5 tokens, others do not


def make_run(root, name: str, mode: str, backbone: str = "tiny"):
    """A run folder as training leaves it (config.yaml, tokenizer/, adapter_init and merged adapters) over
    the tiny synthetic corpus in `root / "data"`, the merged adapter random so that it differs from the base."""
    run = root / "runs" / name
    config = RunConfig().with_overrides({"run.name": name, "run.output_dir": str(root / "runs"),
                                         "model.backbone": backbone,
                                         "data.root": str(root / "data"), "tmole.mode": mode, "tmole.rank": 4,
                                         "tmole.alpha": 8.0, "tmole.task_dim": 16, "tmole.router_hidden": 8})
    run.mkdir(parents=True)
    save_config(config, run / "config.yaml")
    tokenizer = build_corpus_tokenizer(corpus_texts(root / "data"), run / "tokenizer", vocab_size=512)
    _, info = load_tokenizer(tokenizer)
    torch.manual_seed(0)
    adapter = attach_adapter(load_backbone(backbone, info, seed=0), config.adapter_config(), [info.embed_id])
    save_adapter(adapter, run / "adapter_init.safetensors")
    randomise(adapter)
    save_adapter(adapter, run / "merged.safetensors")
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    synthesize(root / "data", 0, "tiny")
    return make_run(root, "evalrun", "tmole")


@pytest.fixture(scope="module")
def data(run_dir):
    return load_split(run_dir.parent.parent / "data", "test", max_records=OPTIONS.max_records)


def test_candidate_pool_and_sampled_negatives():
    records = [{"query": f"item {i + 20} | Top{i % 2} > Sub > Leaf", "positive": f"item {i} | Top{i % 2} > Sub > Leaf",
                "negatives": [f"item {i + 10} | Top{i % 2} > Sub > Leaf"]} for i in range(6)]
    records[0]["query"] = records[2]["negatives"][0]  # an I2I-like query that is itself a document of the pool
    pool = CandidatePool.of("I2I", records)
    assert len(pool.documents) == 12 and pool.positives == (0, 2, 4, 6, 8, 10)
    assert pool.own == (pool.documents.index(records[0]["query"]), None, None, None, None, None)
    rows, share = pool.sampled_candidates(negatives=4, seed=1)
    assert (rows, share) == pool.sampled_candidates(negatives=4, seed=1)
    assert rows != pool.sampled_candidates(negatives=4, seed=2)[0]
    assert share == 1.0  # 5 other documents (4 for record 0) share each positive's top category
    for positive, own, row in zip(pool.positives, pool.own, rows):
        assert row[0] == positive and len(set(row)) == 5 and own not in row
        assert {category_of(pool.documents[i]) for i in row} == {category_of(pool.documents[positive])}
    wide, share = pool.sampled_candidates(negatives=8, seed=0)  # filled from the other category
    assert len(set(wide[1])) == 9 and share == pytest.approx((4 + 5 * 5) / 48)
    with pytest.raises(ValueError, match="too few for 11 sampled negatives .*--negatives"):
        pool.sampled_candidates(negatives=11, seed=0)  # record 0 leaves out its own item too: 10 others
    users = CandidatePool.of("U2I", [{**record, "query": f"user {i}"} for i, record in enumerate(records)])
    every_other, _ = users.sampled_candidates(negatives=11, seed=0)  # no query is a document: 11 others each
    assert all(sorted(row) == list(range(12)) for row in every_other)
    with pytest.raises(ValueError, match="not an embedding task"):
        CandidatePool.of("SR", records)
    assert category_of("no path here") is None


def test_ranks_match_a_brute_force_sort_and_ties_count_against_the_positive():
    rng = np.random.default_rng(0)
    queries, documents = rng.normal(size=(7, 5)), rng.normal(size=(30, 5))
    positives = [3, 0, 29, 7, 7, 12, 1]
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = documents / np.linalg.norm(documents, axis=1, keepdims=True)
    scores = q @ d.T
    expected = [1 + int(np.sum(scores[i] > scores[i, p])) for i, p in enumerate(positives)]
    assert full_pool_ranks(queries, documents, positives).tolist() == expected
    # leaving out a document that outscores the positive moves the positive up by one
    beaten = [int(np.argmax(scores[i])) if expected[i] > 1 else None for i in range(7)]
    moved = [rank - (doc is not None) for rank, doc in zip(expected, beaten)]
    assert full_pool_ranks(queries, documents, positives, beaten).tolist() == moved
    candidates = [[p, *rng.choice([j for j in range(30) if j != p], 6, replace=False)] for p in positives]
    by_hand = [1 + sum(scores[i, c] > scores[i, row[0]] for c in row[1:]) for i, row in enumerate(candidates)]
    assert sampled_ranks(queries, documents, candidates).tolist() == by_hand
    # a collapsed model (identical embeddings) and a broken one (NaN) rank the positive last, not first
    same = np.ones((2, 5))
    assert full_pool_ranks(same, np.ones((30, 5)), [0, 4]).tolist() == [30, 30]
    assert sampled_ranks(np.full((1, 5), np.nan), documents, [candidates[0]]).tolist() == [7]
    assert full_pool_ranks(np.zeros((1, 5)), documents, [3]).tolist() == [30]
    # ... last among the documents that count: the left-out ones never do
    assert full_pool_ranks(np.full((1, 5), np.nan), documents, [3], [[1, 2]]).tolist() == [28]
    assert full_pool_ranks(queries[:1], documents, [3], [[3]]).tolist() == [expected[0]]  # the positive always counts


def test_batched_inference_equals_one_record_at_a_time(run_dir, data):
    source = ModelSource.from_run(run_dir, "merged")
    records = data["SA"][:3] + data["AVE"][:3]  # two tasks, different lengths, one batch
    queries = data["Q2I"][:3] + data["U2I"][:2]
    with source.opened() as model:
        assert isinstance(model, Inference) and model.adapter is not None
        model.options = InferenceOptions(batch_size=8)
        batched = model.generate(records, max_new_tokens=6)
        vectors = model.embed_queries(queries)
        documents = model.embed_documents([r["positive"] for r in queries[:3]], "Q2I")
        model.options = InferenceOptions(batch_size=1)
        assert batched == [model.generate([r], max_new_tokens=6)[0] for r in records]
        np.testing.assert_allclose(vectors, np.concatenate([model.embed_queries([r]) for r in queries]), atol=1e-5)
        np.testing.assert_allclose(documents, model.embed_documents([r["positive"] for r in queries[:3]], "Q2I"),
                                   atol=1e-5)
    assert any(batched), "the random adapter generates something"


@pytest.fixture(scope="module")
def ending_run_dir(run_dir):
    """A run on the tiny backbone with its (tied) EOS row scaled up: greedy decoding ends an answer where the
    last hidden state leans toward EOS, so some answers end early and others run to the limit."""
    root = run_dir.parent.parent
    _, info = load_tokenizer(run_dir / "tokenizer")
    model = load_backbone("tiny", info, seed=0).model
    with torch.no_grad():
        model.get_input_embeddings().weight[info.eos_id] *= EOS_SCALE
    model.save_pretrained(root / "ending-backbone")
    return make_run(root, "endingrun", "tmole", backbone=str(root / "ending-backbone"))


def test_answers_cut_at_the_generation_limit_are_counted_and_named(ending_run_dir, data):
    """An answer is cut when greedy generation, unbatched and by hand, reaches the limit without EOS; the
    evaluation counts those per task, logs them and names them under the tables."""
    run_dir = ending_run_dir
    source = ModelSource.from_run(run_dir, "merged")
    generative = {task: records for task, records in data.items() if get_task(task).kind is Kind.GENERATIVE}
    limit = 5
    with source.opened() as model:
        expected = {task: sum(model.info.eos_id not in greedy_new_tokens(model.adapter, run_dir / "tokenizer", r, limit)
                              for r in records) for task, records in generative.items()}
    assert 0 < sum(expected.values()) < sum(map(len, generative.values())), expected  # both kinds of answer
    evaluation = evaluate_model(source, generative, EvalSection(**{**vars(OPTIONS), "max_new_tokens": limit}))
    assert {task: score.cut for task, score in evaluation.generative.items()} == expected
    metrics = evaluation_metrics(evaluation, "test")
    assert {task: metrics[f"test_cut/{task}"] for task in generative} == expected
    named = [f"{task} {cut}/{len(generative[task])}" for task, cut in expected.items() if cut]
    assert f"{source.label}: answers cut at eval.max_new_tokens before they ended: {', '.join(named)}" \
        in evaluation_tables([evaluation])


def test_sharded_ray_evaluation_equals_in_process_and_scores_by_hand(ray_cluster, run_dir, data):
    source = ModelSource.from_run(run_dir, "merged")
    here = evaluate_model(source, data, OPTIONS, seed=3)
    sharded = evaluate_model(source, data, EvalSection(**{**vars(OPTIONS), "workers": 2}), seed=3)
    assert here.answers == sharded.answers
    assert set(here.generative) == set(task_names("generative"))
    assert set(here.retrieval) == {"sampled", "full"}
    for protocol, group in here.retrieval.items():
        assert set(group) == set(task_names("embedding"))
        for task, score in group.items():
            assert sharded.retrieval[protocol][task].value == pytest.approx(score.value, abs=1e-6)
            assert score.count == len(data[task])
    # Q2I under the full pool, by hand: embed, rank by brute force, MRR@20
    pool = CandidatePool.of("Q2I", data["Q2I"])
    with source.opened() as model:
        q, d = model.embed_queries(data["Q2I"]), model.embed_documents(list(pool.documents), "Q2I")
    scores = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    ranks = [1 + int(np.sum(scores[i] > scores[i, p] + 1e-6)) for i, p in enumerate(pool.positives)]
    assert here.retrieval["full"]["Q2I"].value == pytest.approx(mrr_at_k(ranks, 20), abs=1e-6)
    assert here.retrieval["full"]["Q2I"].protocol == f"full pool ({len(pool.documents)})"


def test_the_authors_scoring_reaches_every_score(run_dir, data):
    """eval.scoring: authors scores the generative tasks and the sampled protocol by the authors' rules, and
    the full pool (which their scripts do not have) by ours."""
    subset = {"SR": data["SR"], "I2I": data["I2I"], "Q2I": data["Q2I"]}
    evaluation = evaluate_model(ModelSource.from_run(run_dir, "merged"), subset,
                                EvalSection(**{**vars(OPTIONS), "scoring": "authors"}))
    # (the cut answers are counted in their own test)
    assert evaluation.generative["SR"] == replace(score_generative("SR", evaluation.answers["SR"], subset["SR"],
                                                                   scoring="authors"), cut=evaluation.generative["SR"].cut)
    assert {(t, s.metric, s.scoring) for t, s in evaluation.retrieval["sampled"].items()} == \
        {("I2I", "ndcg", "authors"), ("Q2I", "mrr", "authors")}
    assert {(t, s.metric, s.scoring) for t, s in evaluation.retrieval["full"].items()} == \
        {("I2I", "ndcg@20", "ours"), ("Q2I", "mrr@20", "ours")}


def test_base_adapter_equals_the_bare_backbone(run_dir, data):
    """The untrained adapter (B = 0) is the base model: same answers as the bare backbone zero-shot."""
    subset = {"SR": data["SR"], "I2I": data["I2I"]}
    init = evaluate_model(ModelSource.from_run(run_dir, "init"), subset, OPTIONS)
    serving = ModelSource.from_run(run_dir, "init").serving
    bare = evaluate_model(ModelSource.from_backbone("bare", serving, run_dir / "tokenizer"), subset, OPTIONS)
    assert init.answers == bare.answers
    assert init.retrieval["full"]["I2I"].value == pytest.approx(bare.retrieval["full"]["I2I"].value, abs=1e-6)


def test_plain_lora_adapter_evaluates_and_differs_from_its_base(run_dir, data):
    """The w/o-TMoLE ablation's adapter (peft LoRA) goes through the same runner."""
    lora = make_run(run_dir.parent.parent, "lorarun", "lora")
    subset = {"PM": data["PM"], "U2I": data["U2I"]}
    trained = evaluate_model(ModelSource.from_run(lora, "merged"), subset, OPTIONS)
    base = evaluate_model(ModelSource.from_run(lora, "init"), subset, OPTIONS)
    assert trained.label == "lorarun:merged" and set(trained.headline()) == {"PM", "U2I"}
    assert trained.answers != base.answers


def evaluation(label: str, values: dict[str, float]) -> ModelEvaluation:
    scores = {t: TaskScore(t, "m", v, 10) for t, v in values.items()}
    generative = {t: s for t, s in scores.items() if t not in ("U2I", "Q2I", "I2I")}
    retrieval = {"sampled": {t: s for t, s in scores.items() if t in ("U2I", "Q2I", "I2I")}}
    return ModelEvaluation(label, generative, retrieval, answers={"SR": ["A"] * 10})


def test_average_rank_before_after_and_tables():
    # columns: model a ranks 1, 1.5, 3; b ranks 2, 1.5, 1; c ranks 3, 3, 2
    ranks = average_ranks([[0.9, 0.5, 0.1], [0.8, 0.5, 0.7], [0.1, 0.2, 0.3]])
    assert ranks[0] == pytest.approx((5.5 / 3, np.std([1, 1.5, 3])))
    assert ranks[1] == pytest.approx((4.5 / 3, np.std([2, 1.5, 1])))
    assert ranks[2] == pytest.approx((8 / 3, np.std([3, 3, 2])))
    base, trained = evaluation("base", {"SR": 0.2, "SA": 0.5, "Q2I": 0.3}), evaluation("trained", {"SR": 0.4, "SA": 0.5, "Q2I": 0.6})
    assert improved_tasks(base, trained) == ["Q2I", "SR"]
    table = before_after_table(base, trained)
    assert "+0.2000" in table and "+0.3000" in table and "+0.0000" in table
    text = comparison_tables([base, trained])
    assert "Generative tasks (Table 2 shape)" in text and "Embedding tasks (Table 3 shape)" in text
    assert "2.00 (0.00)" in text  # base is last on the one embedding column
    # a NaN score (the authors' scoring with every query left out) ranks last, never first
    assert average_ranks([[np.nan, 0.2], [0.5, 0.1]]) == [(1.5, 0.5), (1.5, 0.5)]
    assert average_ranks([[np.nan], [np.nan], [0.1]]) == [(2.5, 0.0), (2.5, 0.0), (1.0, 0.0)]
    # tasks not evaluated for every model are named, not dropped in silence
    partial = comparison_tables([evaluation("a", {"SR": 0.2, "U2I": 0.3, "AP": 0.1}), evaluation("b", {"SR": 0.4})])
    assert partial.endswith("\n\nnot compared (not evaluated for every model): AP, U2I (sampled)")
    with pytest.raises(ValueError, match=r"share no task to compare \(each has only some of: SR, U2I \(sampled\)\)"):
        comparison_tables([evaluation("a", {"U2I": 0.3}), evaluation("b", {"SR": 0.4})])


def test_logged_evaluations_round_trip_and_compare(tmp_path):
    from recfound import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(uri, "eval-test", "evalrun", {"seed": 0}, artifact_root=str(tmp_path / "art"))
    logged = {"test_base": evaluation("base", {"SR": 0.2, "Q2I": 0.3}), "test": evaluation("trained", {"SR": 0.4, "Q2I": 0.6})}
    log_evaluations(uri, run_id, logged)
    client = tracking.store.client(uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test/SR"] == 0.4 and metrics["test_base/Q2I"] == 0.3 and metrics["test/generative_avg"] == 0.4
    back = read_logged_evaluations(uri, "evalrun")
    assert {role: e.to_dict() for role, e in back.items()} == {role: e.to_dict() for role, e in logged.items()}
    artifacts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert {"evaluation/scores.json", "evaluation/tables.txt", "evaluation/table.json", "evaluation/answers"} <= artifacts
    text = compare_runs([run_id, "evalrun"], uri)
    assert f"{run_id}:test_base" in text and "evalrun:test" in text
    with pytest.raises(KeyError, match="no MLflow run with id or name 'nope' in sqlite:///"):
        read_logged_evaluations(uri, "nope")
    with pytest.raises(KeyError) as caught:
        read_logged_evaluations(uri, "it's")  # a quote in the name: searched, not a filter syntax error
    assert caught.value.args[0] == f"""no MLflow run with id or name "it's" in {uri}"""
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(FileNotFoundError, match="no MLflow store there"):
        read_logged_evaluations(f"sqlite:///{missing}", "evalrun")
    assert not missing.parent.exists()  # reading created nothing


def test_a_run_and_data_in_a_bucket_score_as_on_disk(run_dir, tmp_path, object_store, capsys):
    """`recfound eval run s3://.../RUN:merged s3://.../adapter_init.safetensors --data s3://...`: the same
    scores as the same run folder and data read from disk."""
    from recfound import storage

    data, bucket = run_dir.parent.parent / "data", f"{object_store}/eval-test"
    storage.upload(run_dir, f"{bucket}/evalrun")
    storage.upload(data / "test", f"{bucket}/data/test")
    options = ["--tasks", "SR", "Q2I", "--max-records", "4", "--max-new-tokens", "4", "--scorer", "none",
               "--workers", "0", "--negatives", "5"]
    scores = {}
    for where, run, corpus in (("disk", str(run_dir), str(data)), ("bucket", f"{bucket}/evalrun", f"{bucket}/data")):
        out = tmp_path / where
        assert main(["eval", "run", f"{run}:merged", f"{run}/adapter_init.safetensors", "--data", corpus, *options,
                     "--out", str(out)]) == 0, capsys.readouterr().err
        scores[where] = {label: {key: value for key, value in model.items() if key != "throughput"}
                         for label, model in json.loads((out / "scores.json").read_text()).items()}
    assert set(scores["bucket"]) == {"evalrun:merged", "evalrun/adapter_init.safetensors"}
    assert scores["bucket"] == scores["disk"]
    storage.delete(bucket)


def test_cli_evaluates_a_run_and_a_bare_backbone(run_dir, tmp_path, capsys):
    data = run_dir.parent.parent / "data"
    out = tmp_path / "out"
    options = ["--data", str(data), "--tasks", "SR", "Q2I", "--max-records", "4", "--max-new-tokens", "4",
               "--scorer", "none", "--workers", "0", "--negatives", "5"]
    init = run_dir / "adapter_init.safetensors"
    assert main(["eval", "run", str(run_dir), "base:tiny", str(init), "--tokenizer", str(run_dir / "tokenizer"),
                 *options, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "evalrun:merged" in printed and "base:tiny" in printed and "protocol: sampled (5 negatives" in printed
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores) == {"evalrun:merged", "base:tiny", "evalrun/adapter_init.safetensors"}
    assert scores["base:tiny"]["generative"]["SR"]["count"] == 4
    # labels with '/' become safe file names; the initial adapter answers as the bare base model does
    answers = sorted(path.name for path in (out / "answers").iterdir())
    assert answers == ["0-evalrun_merged.jsonl", "1-base_tiny.jsonl", "2-evalrun_adapter_init.safetensors.jsonl"]
    assert [json.loads(line)["answer"] for line in (out / "answers" / answers[1]).read_text().splitlines()] == \
        [json.loads(line)["answer"] for line in (out / "answers" / answers[2]).read_text().splitlines()]
    assert main(["eval", "run", str(run_dir), *options, "--scoring", "authors", "--out", str(tmp_path / "theirs")]) == 0
    assert "SR recall@1 [authors]" in capsys.readouterr().out
    theirs = json.loads((tmp_path / "theirs" / "scores.json").read_text())["evalrun:merged"]
    assert theirs["generative"]["SR"]["scoring"] == theirs["retrieval"]["sampled"]["Q2I"]["scoring"] == "authors"
    assert main(["eval", "run", str(run_dir), f"{run_dir}:merged", *options]) == 1
    assert f"{run_dir} and {run_dir}:merged are the same model" in capsys.readouterr().err
    assert main(["eval", "run", f"{run_dir}:fianl", "--data", str(data)]) == 1
    assert f"{run_dir}: no model 'fianl'; choose init, final or merged" in capsys.readouterr().err
    assert main(["eval", "run", str(tmp_path / "missing"), "--data", str(data)]) == 1
    assert "no such run folder or adapter file" in capsys.readouterr().err
    assert main(["eval", "run", "base:tiny", "--data", str(data)]) == 1
    assert "needs --tokenizer" in capsys.readouterr().err


def test_eval_run_refuses_bad_input_before_it_evaluates(run_dir, tmp_path, capsys):
    data = run_dir.parent.parent / "data"
    options = ["--data", str(data), "--tasks", "SR", "--max-records", "2", "--max-new-tokens", "2", "--scorer", "none",
               "--workers", "0"]
    (tmp_path / "taken").write_text("mine")
    cases = [
        ([str(run_dir), *options, "--out", str(tmp_path / "taken")],
         f"{tmp_path / 'taken'}: exists and is not a folder written by this command (no scores.json)"),
        ([str(run_dir), *options, "--log", "--tracking-uri", "foo://bar"], "--log: cannot use the MLflow store foo://bar ("),
        ([str(run_dir), *options, "--log", "--tracking-uri", str(tmp_path / "mlflow.db")],
         f"--log: {str(tmp_path / 'mlflow.db')!r} is a path, not a tracking URI: for a SQLite store there, give "
         f"sqlite:///{tmp_path / 'mlflow.db'}; for a server, its http:// URL"),
        ([str(run_dir), *options[:2], "--tasks", "sr", *options[4:]], "unknown task 'sr'; known tasks: U2I, Q2I"),
        (["base:", "--tokenizer", str(run_dir / "tokenizer"), *options], "base:: give the backbone after base:"),
        ([str(run_dir), str(run_dir / "merged.safetensors"), *options],
         f"{run_dir} and {run_dir / 'merged.safetensors'} are the same model (each model is evaluated once)"),
    ]
    for argv, message in cases:
        assert main(["eval", "run", *argv]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith(f"recfound: error: {message}") and "\n" not in captured.err.rstrip(), captured.err
        assert "Generative tasks" not in captured.out  # refused before any model was evaluated
    assert (tmp_path / "taken").read_text() == "mine"


def test_two_runs_of_one_folder_name_are_told_apart_by_their_paths(run_dir, tmp_path, capsys):
    other = tmp_path / "elsewhere" / run_dir.name
    shutil.copytree(run_dir, other)
    other_init = other / "adapter_init.safetensors"
    other_init.write_bytes((run_dir / "merged.safetensors").read_bytes())  # another model: the copy's init differs
    assert main(["eval", "run", f"{run_dir}:init", f"{other}:init", "--data", str(run_dir.parent.parent / "data"),
                 "--tasks", "SR", "--max-records", "2", "--max-new-tokens", "2", "--scorer", "none",
                 "--workers", "0"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"{run_dir}:init" in printed and f"{other}:init" in printed
