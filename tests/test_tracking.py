"""MLflow tracking on a real SQLite store and registry: params, per-step metrics, artifacts, and the
adapter logged as a pyfunc model, registered, loaded back and served."""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

import recfound
from recfound.data.prompts import embedding_instruction, generative_prompt
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.eval.metrics import TaskScore
from recfound.eval.runner import ModelEvaluation
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.objectives import embed
from recfound.model.state import save_adapter
from recfound.tasks import task_index
from recfound.tracking import (RecfoundAdapterModel, ServingConfig, StepLogger, default_artifact_root,
                               default_tracking_uri, finish_run, load_registered_adapter, load_served_adapter,
                               log_and_register_adapter, log_artifact_dir, log_artifact_files, log_dataset,
                               run_tags, source_tags, start_run, ui_command)
from recfound.tracking.limits import TRUNCATED
from recfound.tracking.metadata import entry_point, git_tags
from test_model_tmole import randomise, small_config

SEED = 3
EMBEDDING_RECORDS = [
    {"task": "Q2I", "instruction": "Find the product for this search.", "query": "red running shoe size 9"},
    {"task": "U2I", "instruction": "Embed the user's history.", "query": "bought: Acme red shoe; Acme blue hat"},
    {"task": "I2I", "instruction": "Embed the item.", "query": "Acme blue hat"},
]
GENERATIVE_RECORDS = [
    {"task": "QR", "instruction": "Rewrite the search query.", "input": "red shoe running"},
    {"task": "SA", "instruction": "How does the reviewer feel?", "input": "Great shoes, they fit well.",
     "options": ["positive", "neutral", "negative"]},
]
TEXTS = [r["instruction"] + " " + r["query"] for r in EMBEDDING_RECORDS] + [
    r["instruction"] + " " + r["input"] for r in GENERATIVE_RECORDS] + ["Answer: great shoes for running"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, artifact root) of one SQLite store for the module (tests use their own names)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", default_artifact_root(root)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(tokenizer folder, adapter file, the adapter itself in eval mode): a tiny fp32 TMoLE adapter
    whose trainable tensors are random, so it changes the base model's outputs."""
    root = tmp_path_factory.mktemp("adapter")
    tokenizer_dir = build_corpus_tokenizer(TEXTS * 20, root / "tokenizer", vocab_size=300)
    _, info = load_tokenizer(tokenizer_dir)
    backbone = load_backbone("tiny", info, dtype="float32", seed=SEED)
    torch.manual_seed(1)
    adapter = attach_adapter(backbone, small_config(), token_ids=[info.embed_id])
    randomise(adapter)
    adapter.eval()
    return tokenizer_dir, save_adapter(adapter, root / "adapter.safetensors"), adapter


def run_in(store, experiment: str, params=None, tags=None) -> str:
    uri, artifact_root = store
    return start_run(uri, experiment, "run", params or {"seed": 0}, tags or {}, artifact_root=artifact_root)


def test_default_uri_honours_the_environment_and_ui_command(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path / "out")
    assert uri == f"sqlite:///{(tmp_path / 'out').resolve()}/mlflow.db"
    assert default_artifact_root(tmp_path / "out") == (tmp_path / "out" / "mlartifacts").resolve().as_uri()
    command = ui_command(uri)
    mlflow_script = Path(sys.executable).absolute().parent / "mlflow"  # this environment's, by absolute path
    assert command.startswith(f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {mlflow_script} ui --backend-store-uri ")
    assert uri in command and "--workers 1" in command and "--host 127.0.0.1" in command
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path) == "http://mlflow.example:5000"
    assert ui_command("http://mlflow.example:5000") == "http://mlflow.example:5000"


def test_start_run_logs_every_param_and_tag(store):
    uri, artifact_root = store
    params = {f"p{i:03d}": i for i in range(230)}
    params.update({"model": {"rank": 16, "targets": ["q_proj", "v_proj"]}, "notes": "x" * 7000, "bad:key?": 1})
    run_id = run_in(store, "params", params, {"data_hash": "abc123", "mode": "tmole"})
    run = mlflow.MlflowClient(uri).get_run(run_id)
    logged = run.data.params
    assert len(logged) == 234 and all(logged[f"p{i:03d}"] == str(i) for i in range(230))
    assert logged["model.rank"] == "16" and logged["model.targets"] == "['q_proj', 'v_proj']"
    assert len(logged["notes"]) == 6000 and logged["notes"].endswith(TRUNCATED) and logged["bad_key_"] == "1"
    assert run.data.tags["data_hash"] == "abc123" and run.data.tags["mode"] == "tmole"
    assert run.info.status == "RUNNING" and run.info.artifact_uri.startswith(artifact_root)
    finish_run(uri, run_id, "FAILED")
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "FAILED"
    with pytest.raises(ValueError, match="one of FINISHED, FAILED, KILLED"):
        finish_run(uri, run_id, "DONE")


def test_step_logger_history_is_complete_ordered_and_skips_nan(store):
    uri, _ = store
    run_id = run_in(store, "metrics")
    tasks = [f"T{i}" for i in range(13)]
    with StepLogger(uri, run_id, flush_every=50) as logger:
        for step in range(120):
            metrics = {f"train_loss/{t}": 1 / (step + 1) for t in tasks} | {f"ratio/{t}": 1 / 13 for t in tasks}
            metrics["step_time_s"] = 0.1
            metrics["val loss (U2I)"] = math.nan if step % 7 == 3 else float(step)
            logger.log(step, metrics)  # 2 flushes of 50 steps x 28 metrics (> 1000 each), then the rest
    client = mlflow.MlflowClient(uri)
    history = client.get_metric_history(run_id, "train_loss/T4")
    assert [m.step for m in history] == list(range(120))
    assert [m.value for m in history] == pytest.approx([1 / (s + 1) for s in range(120)])
    kept = client.get_metric_history(run_id, "val loss _U2I_")
    nan_steps = {s for s in range(120) if s % 7 == 3}
    assert [m.step for m in kept] == [s for s in range(120) if s not in nan_steps]
    assert logger.skipped == {"val loss _U2I_": len(nan_steps)}
    assert len(client.get_run(run_id).data.metrics) == 2 * 13 + 2


def test_artifact_files_and_folders_land(store, tmp_path):
    uri, _ = store
    run_id = run_in(store, "artifacts")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "ratios.png").write_bytes(b"png")
    (tmp_path / "eval.csv").write_text("task,score\nSA,0.5\n")
    log_artifact_files(uri, run_id, [tmp_path / "eval.csv"], artifact_path="eval")
    log_artifact_dir(uri, run_id, tmp_path / "plots", artifact_path="plots")
    client = mlflow.MlflowClient(uri)
    assert [a.path for a in client.list_artifacts(run_id, "eval")] == ["eval/eval.csv"]
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/ratios.png"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        log_artifact_files(uri, run_id, [tmp_path / "missing.csv"])


def direct_embeddings(model, tokenizer_dir, route=None) -> torch.Tensor:
    """Embeddings of EMBEDDING_RECORDS, one record at a time, tokenized by hand; `route` (an
    adapter's `set_tasks`) routes each record by its task."""
    tokenizer, info = load_tokenizer(tokenizer_dir)
    vectors = []
    for record in EMBEDDING_RECORDS:
        text = [embedding_instruction(record["instruction"]), record["query"]]
        ids = [info.embed_id] + [i for t in text for i in tokenizer.encode(t, add_special_tokens=False).ids]
        if route is not None:
            route([task_index(record["task"])])
        with torch.no_grad():
            vectors.append(embed(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0])
    return torch.stack(vectors)


def greedy_new_tokens(adapter, tokenizer_dir, record: dict, max_new_tokens: int) -> list[int]:
    """The greedy new tokens (EOS included when it came) for one generative record, unbatched, tokenized by
    hand."""
    tokenizer, info = load_tokenizer(tokenizer_dir)
    prompt = generative_prompt(record["instruction"], record["input"], record.get("options"))
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    adapter.set_tasks([task_index(record["task"])])
    return adapter.model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=info.pad_id, eos_token_id=info.eos_id)[0, len(ids):].tolist()


def direct_generation(adapter, tokenizer_dir, record: dict, max_new_tokens: int) -> str:
    """Greedy text for one generative record, unbatched, tokenized by hand."""
    tokenizer, info = load_tokenizer(tokenizer_dir)
    out = greedy_new_tokens(adapter, tokenizer_dir, record, max_new_tokens)
    out = out[: out.index(info.eos_id)] if info.eos_id in out else out
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def test_registered_adapter_loads_and_serves_like_the_adapter(store, served, monkeypatch):
    uri, _ = store
    tokenizer_dir, adapter_file, adapter = served
    run_id = run_in(store, "registry")
    registered = log_and_register_adapter(uri, run_id, adapter_file, tokenizer_dir, "tiny", SEED, "rf-adapter",
                                          {"data_hash": "d41d8c", "stage": "test"})
    assert (registered.name, registered.version) == ("rf-adapter", "1")
    assert registered.registered_uri == "models:/rf-adapter/1"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version("rf-adapter", "1")
    assert version.run_id == run_id
    assert version.tags == {"run_id": run_id, "base_model": "tiny", "data_hash": "d41d8c", "stage": "test"}
    model_id = registered.model_uri[len("models:/"):]
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [model_id]
    links = client.get_logged_model(model_id).tags["mlflow.modelVersions"]
    assert json.loads(links) == [{"name": "rf-adapter", "version": "1"}]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    model = mlflow.pyfunc.load_model("models:/rf-adapter/1")
    assert isinstance(model.unwrap_python_model(), RecfoundAdapterModel)
    out = model.predict(EMBEDDING_RECORDS + GENERATIVE_RECORDS, params={"max_new_tokens": 6})
    assert list(out.columns) == ["task", "embedding", "text"] and list(out.task) == ["Q2I", "U2I", "I2I", "QR", "SA"]
    served_vectors = torch.tensor(out.embedding[:3].tolist())
    expected = direct_embeddings(adapter.model, tokenizer_dir, adapter.set_tasks)
    assert torch.allclose(served_vectors, expected, rtol=1e-5, atol=1e-5), (served_vectors - expected).abs().max()
    base = load_backbone("tiny", load_tokenizer(tokenizer_dir)[1], seed=SEED).model
    assert not torch.allclose(direct_embeddings(base, tokenizer_dir), expected, atol=1e-3)  # the adapter matters
    assert out.text[:3].isna().all() and out.embedding[3:].isna().all()
    assert out.text[3] and list(out.text[3:]) == [direct_generation(adapter, tokenizer_dir, r, 6)
                                                  for r in GENERATIVE_RECORDS]  # batched = one at a time
    with pytest.raises(ValueError, match=r"input row 0 \(task Q2I\): missing query"):
        model.predict([{"task": "Q2I", "instruction": "Find it."}])
    # options as one string would be split into characters, a number not read at all: both refused by name
    for options, shown in (("positive, negative", "str"), (5, "int")):
        with pytest.raises(ValueError, match=f"input row 0 \\(task SA\\): options: expected a list of strings, "
                                             f"got {shown}$"):
            model.predict([{**GENERATIVE_RECORDS[-1], "options": options}])
    for params, shown in (({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
                          ({"max_new_tokens": -1}, "max_new_tokens must be a whole number >= 1, got -1")):
        with pytest.raises(ValueError, match=f"param {shown}"):
            model.predict(EMBEDDING_RECORDS[:1], params=params)

    again = log_and_register_adapter(uri, run_id, adapter_file, tokenizer_dir, "tiny", SEED, "rf-adapter",
                                     {"data_hash": "d41d8c"})
    assert again.version == "2" and again.model_uri != registered.model_uri
    client.set_registered_model_alias("rf-adapter", "champion", "2")
    by_alias = load_registered_adapter(uri, "rf-adapter", "champion")
    assert torch.allclose(torch.tensor(by_alias.predict(EMBEDDING_RECORDS[:1]).embedding[0]), expected[0], atol=1e-5)


def test_unnamed_adapter_is_logged_but_not_registered(store, served):
    uri, _ = store
    tokenizer_dir, adapter_file, _ = served
    run_id = run_in(store, "unregistered")
    logged = log_and_register_adapter(uri, run_id, adapter_file, tokenizer_dir, "tiny", SEED, None, {})
    assert logged.name is None and logged.version is None and logged.registered_uri is None
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    model = client.get_logged_model(logged.model_uri[len("models:/"):])
    assert model.name == "merged_model" and model.source_run_id == run_id and model.status == "READY"
    assert not client.search_model_versions(f"run_id = '{run_id}'")


def test_a_model_carries_its_runs_backbone_and_serves_where_the_run_is_gone(store, served, tmp_path):
    """A run of a preset pre-trained on its corpus trains on its own backbone/ folder; the registered model
    carries that folder, so with the run folder deleted it still loads, through MLflow's pyfunc and through
    recfound's own loader (`recfound eval run models:/...`, export), with the adapter's outputs."""
    import shutil

    from recfound.eval.source import ModelSource

    uri, _ = store
    tokenizer_dir, _, _ = served
    _, info = load_tokenizer(tokenizer_dir)
    folder = tmp_path / "run" / "backbone"
    load_backbone("tiny", info, seed=SEED + 1).model.save_pretrained(folder)  # weights no preset seed gives
    torch.manual_seed(2)
    adapter = attach_adapter(load_backbone(folder, info), small_config(), token_ids=[info.embed_id])
    randomise(adapter)
    adapter.eval()
    adapter_file = save_adapter(adapter, tmp_path / "adapter.safetensors")
    expected = direct_embeddings(adapter.model, tokenizer_dir, adapter.set_tasks)
    registered = log_and_register_adapter(uri, run_in(store, "carried"), adapter_file, tokenizer_dir, str(folder),
                                          SEED, "rf-carried", {}, backbone_folder=folder)
    shutil.rmtree(tmp_path / "run")
    out = load_registered_adapter(uri, "rf-carried", registered.version).predict(EMBEDDING_RECORDS)
    assert torch.allclose(torch.tensor(out.embedding.tolist()), expected, atol=1e-5)
    dense = ModelSource.from_registered(uri, "rf-carried", registered.version).export_dense("Q2I", tmp_path / "dense")
    assert (dense / "config.json").is_file()

def test_requests_are_checked_as_training_checks_records_and_untrained_tasks_refused(store, served, tmp_path):
    """What training would refuse in a record's inputs a served model refuses too, naming the row, the task
    and the field (a list, a number or a flag where text belongs is not turned into text); a task the run did
    not train is refused by the pyfunc and by export."""
    from recfound.eval.source import ModelSource

    uri, _ = store
    tokenizer_dir, adapter_file, _ = served
    registered = log_and_register_adapter(uri, run_in(store, "checked"), adapter_file, tokenizer_dir, "tiny", SEED,
                                          "rf-checked", {}, tasks=["Q2I", "SA", "QR"])
    # The model itself, as MLflow's scoring server calls it: MLflow's own schema check in front of an in-process
    # predict refuses some of these (a flag) and passes others (a list), and the server's passes more.
    model = load_registered_adapter(uri, "rf-checked", registered.version).unwrap_python_model()
    q2i, sa = EMBEDDING_RECORDS[0], GENERATIVE_RECORDS[1]
    refused = [
        (EMBEDDING_RECORDS[1], "input row 0: the model was not trained on task U2I; it was trained on Q2I, SA, QR"),
        ({**q2i, "query": ["a", "b"]}, "input row 0 (task Q2I): query: expected a string, got list"),
        ({**q2i, "query": True}, "input row 0 (task Q2I): query: expected a string, got bool"),
        ({**q2i, "query": 5}, "input row 0 (task Q2I): query: expected a string, got int"),
        ({**q2i, "query": " "}, "input row 0 (task Q2I): query: empty text"),
        ({**q2i, "instruction": ""}, "input row 0 (task Q2I): instruction: empty text"),
        ({**sa, "input": {"a": 1}}, "input row 0 (task SA): input: expected a string, got dict"),
        ({k: v for k, v in sa.items() if k != "options"},
         "input row 0 (task SA): options: task SA answers with an option letter: options are required"),
        ({**sa, "options": []}, "input row 0 (task SA): options: task SA answers with an option letter"),
        ({**sa, "options": ["good", None]}, "input row 0 (task SA): options[1]: expected a string, got NoneType"),
        ({**sa, "options": [f"option {i}" for i in range(27)]}, "input row 0 (task SA): options: at most 26 options"),
    ]
    for row, reason in refused:
        with pytest.raises(ValueError, match=f"^{re.escape(reason)}"):
            model.predict(None, [row])
    answered = model.predict(None, [q2i, {**sa, "input": ""}])  # an empty input is a valid one
    assert len(answered.embedding[0]) > 1 and isinstance(answered.text[1], str)
    source = ModelSource.from_registered(uri, "rf-checked", registered.version)
    with pytest.raises(ValueError, match=r"rf-checked/\d+: the model was not trained on task U2I; it was trained on "
                                         r"Q2I, SA, QR; export one of those"):
        source.export_dense("U2I", tmp_path / "dense")
    assert not (tmp_path / "dense").exists()


def test_concurrent_requests_get_the_answers_each_gets_alone(store, served):
    """MLflow's scoring server predicts each request in a thread of its own on one model, which a call routes to
    its tasks: eight threads at once, requests of mixed tasks and sizes, each answered as when sent alone."""
    from concurrent.futures import ThreadPoolExecutor

    uri, _ = store
    tokenizer_dir, adapter_file, _ = served
    registered = log_and_register_adapter(uri, run_in(store, "threads"), adapter_file, tokenizer_dir, "tiny", SEED,
                                          "rf-threads", {})
    model = load_registered_adapter(uri, "rf-threads", registered.version)
    records = EMBEDDING_RECORDS + GENERATIVE_RECORDS
    requests = [[records[i % 5]] if i % 3 else [records[(i + j) % 5] for j in range(1 + i % 4)] for i in range(48)]
    params = {"max_new_tokens": 3}
    alone = [model.predict(rows, params=params) for rows in requests]
    with ThreadPoolExecutor(8) as threads:
        together = list(threads.map(lambda rows: model.predict(rows, params=params), requests))
    for i, (one, other) in enumerate(zip(alone, together)):
        assert list(one.text) == list(other.text), i
        for a, b in zip(one.embedding, other.embedding):
            assert (a is None and b is None) or np.allclose(a, b, atol=1e-6), i


def test_a_relative_backbone_path_is_registered_absolute(store, served, tmp_path, monkeypatch):
    uri, _ = store
    tokenizer_dir, _, _ = served
    _, info = load_tokenizer(tokenizer_dir)
    (tmp_path / "project").mkdir()
    load_backbone("tiny", info, seed=SEED + 2).model.save_pretrained(tmp_path / "project" / "hf-backbone")
    torch.manual_seed(3)
    adapter = attach_adapter(load_backbone(tmp_path / "project" / "hf-backbone", info), small_config(),
                             token_ids=[info.embed_id])
    randomise(adapter)
    adapter.eval()
    adapter_file = save_adapter(adapter, tmp_path / "adapter.safetensors")
    monkeypatch.chdir(tmp_path / "project")
    registered = log_and_register_adapter(uri, run_in(store, "relative"), adapter_file, tokenizer_dir, "hf-backbone",
                                          SEED, "rf-relative", {})
    monkeypatch.chdir(tmp_path)  # served from elsewhere
    out = load_registered_adapter(uri, "rf-relative", registered.version).predict(EMBEDDING_RECORDS)
    expected = direct_embeddings(adapter.model, tokenizer_dir, adapter.set_tasks)
    assert torch.allclose(torch.tensor(out.embedding.tolist()), expected, atol=1e-5)


def test_a_missing_backbone_folder_is_named(served, tmp_path):
    tokenizer_dir, adapter_file, _ = served
    serving = ServingConfig(str(tmp_path / "no-such-model"), SEED)
    with pytest.raises(FileNotFoundError, match="must be a preset or exist where the model is served"):
        load_served_adapter(adapter_file, tokenizer_dir, serving)


# --- run metadata: source, git, version, dataset input, absolute paths, base vs trained -------------

def _git_output(folder, *args: str) -> str | None:
    done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_source_tags_name_the_entry_point_type_commit_and_version():
    assert entry_point(["/opt/env/bin/recfound", "train", "--config", "demo.yaml"]) == "recfound train"
    assert entry_point(["/opt/env/bin/recfound", "--quiet", "sweep"]) == "recfound sweep"
    assert entry_point(["jobs/train.py", "--config", "jobs/configs/demo.yaml"]) == "jobs/train.py"
    assert entry_point(["-c"]) == "python -c"
    tags = source_tags(["jobs/train.py", "--set", "run.name=x"], {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"})
    assert tags["mlflow.source.name"] == "jobs/train.py" and tags["mlflow.source.type"] == "JOB"
    assert source_tags(["recfound", "train"], {})["mlflow.source.type"] == "LOCAL"
    assert tags["recfound.version"] == importlib.metadata.version("recfound")
    package = Path(recfound.__file__).resolve().parent
    commit = _git_output(package, "rev-parse", "HEAD") or _git_output(Path.cwd(), "rev-parse", "HEAD")
    if commit is None:  # not run from a git checkout: then there is nothing to tag
        assert "mlflow.source.git.commit" not in tags
    else:
        assert tags["mlflow.source.git.commit"] == commit


def test_git_tags_of_a_checkout_outside_one_and_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # git does not look above tmp_path
    plain, repo = tmp_path / "plain", tmp_path / "repo"
    plain.mkdir()
    repo.mkdir()
    for args in (["init", "-q"], ["symbolic-ref", "HEAD", "refs/heads/feature"],
                 ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "--allow-empty", "-m", "one"],
                 ["remote", "add", "origin", "https://user:secret@example.com/org/recfound.git"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)
    assert git_tags([plain]) == {}
    assert git_tags([plain, repo]) == {  # the first folder inside a checkout
        "mlflow.source.git.commit": _git_output(repo, "rev-parse", "HEAD"),
        "mlflow.source.git.branch": "feature",
        "mlflow.source.git.repoURL": "https://example.com/org/recfound.git",  # no credentials
    }
    monkeypatch.setenv("PATH", str(plain))  # no git program at all
    assert git_tags([repo]) == {}
    tags = source_tags(["recfound", "train"], {})
    assert tags["mlflow.source.name"] == "recfound train" and "mlflow.source.git.commit" not in tags


def test_a_nested_run_takes_its_parents_source(store):
    uri, _ = store
    parent = run_in(store, "nested", tags=source_tags(["/opt/env/bin/recfound", "sweep"], {}))
    tags = run_tags(uri, parent)
    assert tags["mlflow.parentRunId"] == parent and tags["mlflow.source.name"] == "recfound sweep"
    child = mlflow.MlflowClient(uri).get_run(run_in(store, "nested", tags=tags)).data.tags
    assert child["mlflow.source.name"] == "recfound sweep" and child["mlflow.source.type"] == "LOCAL"
    assert child["recfound.version"] == recfound.__version__ and child["mlflow.parentRunId"] == parent


def test_dataset_input_names_the_corpus_its_digest_and_where_it_lives(store, tmp_path, monkeypatch):
    uri, _ = store
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    run_id = run_in(store, "datasets")
    log_dataset(uri, run_id, "corpus", "0123456789abcdef", "corpus", profile={"train_records": 12})
    log_dataset(uri, run_id, "remote", "fedcba9876543210", "s3://bucket/corpus", context="evaluation")
    inputs = {i.dataset.name: i for i in mlflow.MlflowClient(uri).get_run(run_id).inputs.dataset_inputs}
    local, remote = inputs["corpus"], inputs["remote"]
    assert local.dataset.digest == "0123456789abcdef" and local.dataset.source_type == "local"
    assert json.loads(local.dataset.source) == {"uri": str((tmp_path / "corpus").resolve())}
    assert json.loads(local.dataset.profile) == {"train_records": 12}
    assert {(t.key, t.value) for t in local.tags} == {("mlflow.data.context", "training")}
    assert json.loads(remote.dataset.source) == {"uri": "s3://bucket/corpus"} and remote.dataset.source_type == "s3"
    assert {(t.key, t.value) for t in remote.tags} == {("mlflow.data.context", "evaluation")}


def test_run_params_hold_absolute_paths_and_the_saved_config_stays_as_given(store, tmp_path, monkeypatch):
    from recfound.config import load_config, save_config
    from recfound.job import run_params

    uri, _ = store
    monkeypatch.chdir(tmp_path)
    config = load_config(None, ["data.root=corpus", "run.output_dir=out/runs"])
    params = run_params(config)
    assert params["data.root"] == str(tmp_path.resolve() / "corpus")
    assert params["run.output_dir"] == str(tmp_path.resolve() / "out" / "runs")
    assert {k: v for k, v in params.items() if k not in ("data.root", "run.output_dir")} == \
        {k: v for k, v in config.flat().items() if k not in ("data.root", "run.output_dir")}
    logged = mlflow.MlflowClient(uri).get_run(run_in(store, "paths", params)).data.params
    assert logged["data.root"] == params["data.root"] and logged["run.output_dir"] == params["run.output_dir"]
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config and config.data.root == "corpus"


def _evaluation(label: str, values: dict[str, float]) -> ModelEvaluation:
    scores = {task: TaskScore(task, "m", value, 10) for task, value in values.items()}
    return ModelEvaluation(label, {t: s for t, s in scores.items() if t != "Q2I"}, {"sampled": {"Q2I": scores["Q2I"]}})


def test_base_and_trained_scores_share_one_metric_per_task(store):
    from recfound.eval.report import log_evaluation_steps, log_evaluations

    uri, _ = store
    run_id = run_in(store, "evaluation")
    base = _evaluation("base", {"SR": 0.2, "SA": 0.5, "Q2I": 0.3})
    trained = _evaluation("trained", {"SR": 0.4, "SA": 0.7, "Q2I": 0.6})
    log_evaluations(uri, run_id, {"test_base": base, "test": trained})
    log_evaluation_steps(uri, run_id, "test_by_step", {0: base, 30: trained})
    client = mlflow.MlflowClient(uri)
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test/SR"] == 0.4 and metrics["test_base/SR"] == 0.2 and metrics["test/generative_avg"] == 0.55
    for key, (before, after) in {"SR": (0.2, 0.4), "SA": (0.5, 0.7), "Q2I": (0.3, 0.6),
                                 "generative_avg": ((0.2 + 0.5) / 2, (0.4 + 0.7) / 2),
                                 "embedding_avg": (0.3, 0.6)}.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, f"test_by_step/{key}"))
        assert history == [(0, pytest.approx(before)), (30, pytest.approx(after))], key


def test_a_sqlite_file_that_is_no_mlflow_store_is_refused_untouched(tmp_path, capsys):
    import sqlite3

    from recfound.cli import main
    from recfound.tracking.store import check_sqlite_store, client

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as database:
        database.execute("CREATE TABLE users (name TEXT)")
    (tmp_path / "junk.db").write_text("not a database")
    for name, message in (("app.db", "another program's SQLite database (tables: users), not an MLflow store"),
                          ("junk.db", "not a SQLite database (file is not a database)")):
        with pytest.raises(ValueError, match=re.escape(f"sqlite:///{tmp_path / name}: {message}")):
            client(f"sqlite:///{tmp_path / name}")
    with sqlite3.connect(other) as database:  # MLflow added none of its tables
        assert [row[0] for row in database.execute("SELECT name FROM sqlite_master")] == ["users"]
    with pytest.raises(FileNotFoundError, match="no MLflow store there"):
        check_sqlite_store(f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}", must_exist=True)
    assert main(["export", "models:/rf/1", "--task", "SA", "--out", str(tmp_path / "o"), "--tracking-uri",
                 f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"]) == 1
    assert not (tmp_path / "typo").exists()  # loading a registered model created no store
    assert main(["eval", "compare", "abc", "--tracking-uri", "sqlite:/x.db"]) == 1  # MLflow's own error: one line
    assert capsys.readouterr().err.endswith("recfound: error: MLflow: Could not parse SQLAlchemy URL from given "
                                            "URL string\n")


def test_a_store_left_with_a_crashed_writers_journal_is_not_refused(tmp_path):
    """A writer killed mid-transaction leaves a hot journal that a read-only look cannot roll back: the
    check lets MLflow open (and recover) the store instead of calling it "not a SQLite database"."""
    import sqlite3

    from recfound.tracking.store import check_sqlite_store

    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as database:
        database.execute("CREATE TABLE alembic_version (version_num TEXT)")
        database.execute("CREATE TABLE runs (payload BLOB)")
    writer = subprocess.run([sys.executable, "-c", f"""
import os, sqlite3
database = sqlite3.connect({str(store)!r})
database.execute("PRAGMA cache_size = 1")  # spill the changes to the file: the journal is hot
database.execute("BEGIN")
database.executemany("INSERT INTO runs VALUES (?)", [(os.urandom(4096),) for _ in range(200)])
os._exit(0)  # killed before it commits
"""], timeout=60)
    assert writer.returncode == 0 and (tmp_path / "mlflow.db-journal").is_file()
    check_sqlite_store(f"sqlite:///{store}")  # no error
    with sqlite3.connect(store) as database:  # a read-write open rolls the journal back
        assert database.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
