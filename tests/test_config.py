"""The typed run config: defaults, the shipped YAMLs, dotted overrides, errors naming the key, round trips."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recfound.config import (
    PATHS, ConfigError, RunConfig, TrainSection, config_from_dict, load_config, save_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "jobs" / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_loading_a_config_does_not_import_torch():
    code = "import sys, recfound.config as c; c.load_config(check_paths=False); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "platform")})
    assert out.stdout.strip() == "False"


def test_defaults():
    config = load_config(check_paths=False)
    assert config == RunConfig()
    assert (config.sched.window, config.tmole.experts.shared, config.train.lr) == (64, 2, 5e-3)
    assert (config.eval.split, config.eval.k, config.eval.sampled_negatives, config.eval.protocol) == ("test", 20, 19, "both")
    assert config.tmole.targets == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert config.run_dir() == str(Path(".cache/runs/recfound-demo"))
    assert config.with_overrides({"run.output_dir": "s3://acme/runs/"}).run_dir() == "s3://acme/runs/recfound-demo"
    assert len(config.task_names()) == 13 and config.task_names("embedding") == ["U2I", "Q2I", "I2I"]


def test_shipped_configs_load():
    assert load_config(CONFIGS / "demo.yaml", check_paths=False) == RunConfig()
    paper = load_config(CONFIGS / "mistral7b-8xh100.yaml", check_paths=False)
    assert paper.model.backbone == paper.data.tokenizer == "/mnt/shared/models/Mistral-7B-Instruct-v0.3"
    assert (paper.model.dtype, paper.model.attn_implementation, paper.train.precision) == (
        "bfloat16", "sdpa", "bf16")
    assert (paper.train.embedding_batch, paper.train.generative_batch, paper.train.lr) == (2048, 1024, 2e-5)
    assert (paper.train.num_workers, paper.train.use_gpu, paper.data.synth_scale) == (8, True, None)
    assert (paper.eval.max_new_tokens, paper.eval.workers, paper.eval.max_records) == (2048, 8, None)
    assert (paper.merge.last, paper.checkpoint.keep, paper.mlflow.register_as) == (5, 5, "recfound-mistral7b")
    assert paper.adapter_config().num_experts == 6


def test_set_overrides_by_dotted_path():
    config = load_config(overrides=["sched.window=32", "tmole.experts.shared=0", "tmole.targets=[q_proj,v_proj]",
                                    "data.synth_scale=null", "train.lr=2e-5", "data.tasks=[U2I, QR]",
                                    "sched.window=48"], check_paths=False)
    assert config.sched.window == 48  # the last one wins
    assert config.tmole.experts == type(config.tmole.experts)(embedding=2, shared=0, generative=2)
    assert config.tmole.targets == ("q_proj", "v_proj")
    assert config.data.synth_scale is None and config.train.lr == 2e-5  # YAML reads 2e-5 as text
    assert config.task_names("generative") == ["QR"]


def test_overrides_apply_over_the_file(tmp_path):
    path = write(tmp_path / "run.yaml", "sched:\n  window: 16\ntrain:\n  steps: 7\n")
    config = load_config(path, ["train.steps=9"], check_paths=False)
    assert (config.sched.window, config.train.steps, config.sched.temperature) == (16, 9, 10.0)


def test_with_overrides():
    base = RunConfig()
    config = base.with_overrides({"sched.window": 32, "tmole.experts.shared": 0, "tmole.experts": {"generative": 3},
                                  "data.tasks": ["U2I", "QR"], "train.generative_batch": 2})
    assert (config.sched.window, config.tmole.experts.shared, config.tmole.experts.generative) == (32, 0, 3)
    assert config.task_names() == ["U2I", "QR"] and config.train.generative_batch == 2
    assert base == RunConfig()
    with pytest.raises(ConfigError, match=r"^<overrides>: sched\.windw: unknown key \(did you mean sched\.window\?\)"):
        base.with_overrides({"sched.windw": 3})


@pytest.mark.parametrize("overrides, key, reason", [
    (["sched.window=abc"], "sched.window", "expected an integer, got 'abc'"),
    (["sched.window=1"], "sched.window", "must be >= 2 (got 1)"),
    (["model.attn_implementation=flash_attention_2"], "model.attn_implementation",
     "flash_attention_2 runs on GPUs only: set train.use_gpu=true"),
    (["mlflow.register_as=team/recfound"], "mlflow.register_as",
     "must be an MLflow model name: not blank, not . or .., no /, : or quotes (got 'team/recfound')"),
    (["mlflow.register_as=' '"], "mlflow.register_as", "must be an MLflow model name: not blank"),
    (["mlflow.register_as=.."], "mlflow.register_as", "must be an MLflow model name: not blank, not . or .."),
    ([f"run.seed={2**32}"], "run.seed", "must be in [0, 2**32): seeds are 32-bit (got 4294967296)"),
    (["sched.warmup_ratio=1"], "sched.warmup_ratio", "must be in [0, 1) (got 1.0)"),
    (["tmole.experts={embedding: 0, shared: 0, generative: 0}"], "tmole.experts",
     "embedding + shared + generative must be > 0"),
    (["tmole.experts.embedding=0", "tmole.experts.shared=0"], "tmole.experts", "embedding + shared must be > 0"),
    (["train.embedding_batch=2"], "train.embedding_batch", "must be >= the 3 embedding tasks and the 2 workers (got 2)"),
    (["train.generative_batch=9"], "train.generative_batch", "must be >= the 10 generative tasks and the 2 workers"),
    (["train.num_workers=4", "data.tasks=[U2I, QR]", "train.embedding_batch=3"], "train.embedding_batch",
     "must be >= the 1 embedding tasks and the 4 workers (got 3)"),
    (["data.tasks=[U2I, Q2I]"], "data.tasks", "must include at least one generative task"),
    (["data.val_per_task=1"], "data.val_per_task", "must be >= the 2 workers"),
    (["sched.eval_interval=121"], "sched.eval_interval", "must be <= train.steps (120)"),
    (["train.zero_stage=0"], "train.zero_stage", "must be in [1, 3]"),
    (["merge.last=4"], "merge.last", "must be <= checkpoint.keep (3)"),
    (["merge.method=vote"], "merge.method", "must be one of ties, authors (got 'vote')"),
    (["merge.trim_after_vote=true"], "merge.trim_after_vote",
     "removed; use merge.method: ties (the default; what trim_after_vote: false did) or merge.method: authors"),
    (["eval.scoring=paper"], "eval.scoring", "must be one of ours, authors (got 'paper')"),
    (["sched.preset=paper", "sched.min_ratio=0.2"], "sched.min_ratio", "must be <= 1/10"),
    (["sched.preset=mine"], "sched.preset", "must be one of paper, authors"),
    (["sched.preset=authors", "sched.max_loss_slope=true"], "sched.max_loss_slope",
     "cannot be set with preset authors, which sets every option as the authors' code does (got True)"),
    (["data.tasks=[U2I, NOPE]"], "data.tasks", "unknown task(s) NOPE; known tasks: U2I, Q2I"),
    (["data.tasks=[]"], "data.tasks", "must not be empty"),
    (["data.synth_scale=huge"], "data.synth_scale", "must be one of tiny, small, paper"),
    (["run.name=my run"], "run.name", "must be a folder name"),
    (["run.name=."], "run.name", "must be a folder name"),
    (["run.name=.."], "run.name", "must be a folder name"),
    (["run.name=a/b"], "run.name", "must be a folder name"),
    (["run.name=-rf"], "run.name", "starting with a letter or digit"),
    ([f"run.name={'x' * 101}"], "run.name", "at most 100 characters"),
    (["run.name=mlartifacts"], "run.name", "must not be one of mlflow.db, mlartifacts, sweeps"),
    (["tmole.targets=q_proj"], "tmole.targets", "expected a list"),
    (["train.use_gpu=maybe"], "train.use_gpu", "expected true or false"),
    (["train.lr=null"], "train.lr", "expected a number, got null"),
    (["sched=3"], "sched", "expected a mapping, got 3"),
    (["shed.window=3"], "shed.window", "unknown key (did you mean sched.window?)"),
    (["zzz=3"], "zzz", "unknown key; the top level has: run, data, model"),
    (["sched.window"], "sched.window", "expected KEY=VALUE"),
])
def test_set_errors_name_the_key(overrides, key, reason):
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides, check_paths=False)
    assert str(caught.value).startswith(f"--set: {key}: ")
    assert reason in caught.value.reason and caught.value.key == key


def test_file_errors_name_the_file(tmp_path):
    typo = write(tmp_path / "demo.yaml", "sched:\n  windw: 32\n")
    with pytest.raises(ConfigError, match=r"demo\.yaml: sched\.windw: unknown key \(did you mean sched\.window\?\)"):
        load_config(typo)
    old = write(tmp_path / "old.yaml", "merge:\n  density: 0.8\n  trim_after_vote: false\n")
    with pytest.raises(ConfigError, match=r"old\.yaml: merge\.trim_after_vote: removed; use merge\.method: ties"):
        load_config(old)
    small = write(tmp_path / "small.yaml", "train:\n  embedding_batch: 2\n")
    with pytest.raises(ConfigError, match=r"small\.yaml: train\.embedding_batch: must be >= the 3 embedding tasks"):
        load_config(small)
    # a bad value set on the command line is blamed on --set, not on the file
    with pytest.raises(ConfigError, match=r"^--set: train\.embedding_batch: "):
        load_config(write(tmp_path / "ok.yaml", "{}"), ["train.embedding_batch=1"])


def test_file_format_errors(tmp_path):
    broken = write(tmp_path / "broken.yaml", "run:\n  name: x\n  seed: [1\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+, column \d+: invalid YAML"):
        load_config(broken)
    listed = write(tmp_path / "listed.yaml", "- run\n- data\n")
    with pytest.raises(ConfigError, match=r"listed\.yaml: expected a mapping of sections at the top level"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"absent\.yaml: cannot read the config file"):
        load_config(tmp_path / "absent.yaml")
    assert load_config(write(tmp_path / "empty.yaml", "# nothing\nsched:\n"), check_paths=False) == RunConfig()


def test_dict_round_trip_and_flat():
    config = RunConfig().with_overrides({"data.tasks": ["U2I", "QR"], "sched.window": 8, "mlflow.register_as": None})
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data and data["tmole"]["targets"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert config_from_dict(data) == config
    flat = config.flat()
    assert list(flat) == [path for path, section in PATHS.items() if section is None]
    assert flat["tmole.experts.shared"] == 2 and flat["data.tasks"] == '["U2I", "QR"]'
    assert flat["mlflow.register_as"] is None
    with pytest.raises(ConfigError, match=r"^sweep: tmole.experts.many: unknown key"):
        config_from_dict({"tmole": {"experts": {"many": 1}}}, source="sweep")


def test_save_and_load(tmp_path):
    config = RunConfig().with_overrides({"run.name": "trial-7", "tmole.mode": "lora", "train.lr": 1e-5})
    path = tmp_path / "runs" / "config.yaml"
    save_config(config, path)
    assert load_config(path, check_paths=False) == config
    assert path.read_text() == config.to_yaml() and [p.name for p in path.parent.iterdir()] == ["config.yaml"]


def test_converters():
    config = RunConfig().with_overrides({"tmole.experts": {"embedding": 1, "shared": 0, "generative": 3},
                                         "tmole.rank": 4, "sched.window": 8, "sched.mode": "uniform",
                                         "embedding.temperature": 0.05, "data.max_text": 64})
    adapter = config.adapter_config()
    assert (adapter.embedding_experts, adapter.shared_experts, adapter.generative_experts, adapter.rank) == (1, 0, 3, 4)
    assert adapter.targets == ("q_proj", "k_proj", "v_proj", "o_proj") and adapter.alpha == 64.0
    sched = config.sched_config()
    assert (sched.window, sched.mode, sched.temperature, sched.warmup_ratio) == (8, "uniform", 10.0, 0.1)
    assert sched.preset == "authors"
    assert config.with_overrides({"sched.preset": "paper"}).sched_config().preset == "paper"
    assert config.embedding_config().temperature == 0.05
    limits = config.token_limits()
    assert (limits.max_prompt, limits.max_response, limits.max_text) == (512, 256, 64)


def test_check_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_config()  # the demo: the corpus is generated, the tokenizer built, the backbone a preset
    with pytest.raises(ConfigError, match=r"^--set: data\.root: no such folder: data"):
        load_config(overrides=["data.synth_scale=null", "data.root=data"])
    (tmp_path / "data").mkdir()
    load_config(overrides=["data.synth_scale=null", "data.root=data"])
    with pytest.raises(ConfigError, match=r"model\.backbone: no such file or folder: models/m7"):
        load_config(overrides=["model.backbone=models/m7"])
    with pytest.raises(ConfigError, match=r"data\.tokenizer: no such file or folder: tok"):
        load_config(overrides=["data.tokenizer=tok"])
    with pytest.raises(ConfigError, match=r"mistral7b-8xh100\.yaml: data\.root: no such folder: /mnt/shared/data/recfound"):
        load_config(CONFIGS / "mistral7b-8xh100.yaml")


def test_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = RunConfig().with_overrides({"run.output_dir": str(tmp_path / "runs")})
    assert config.tracking_uri() == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert config.artifact_root() == str(tmp_path / "runs" / "mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert (config.tracking_uri(), config.artifact_root()) == ("http://mlflow:5000", None)
    explicit = config.with_overrides({"mlflow.tracking_uri": "http://other:5000"})
    assert explicit.tracking_uri() == "http://other:5000"


def test_sections_validate_on_construction_and_errors_pickle():
    with pytest.raises(ConfigError, match=r"^steps: must be >= 1 \(got 0\)"):
        TrainSection(steps=0)
    error = pickle.loads(pickle.dumps(ConfigError("sched.window", "must be >= 2", "demo.yaml")))
    assert (str(error), error.key) == ("demo.yaml: sched.window: must be >= 2", "sched.window")


def test_docs_list_every_key():
    text = (ROOT / "docs" / "config.md").read_text()
    assert [path for path, section in PATHS.items() if section is None and f"| `{path}` |" not in text] == []


def test_the_docs_paper_column_is_what_the_paper_config_holds():
    """docs/config.md's "paper" column: "-" is the default's value, a literal in backticks (or null) the value of
    mistral7b-8xh100.yaml; words (e.g. "the model folder") are checked by test_shipped_configs_load."""
    default, paper = RunConfig().flat(), load_config(CONFIGS / "mistral7b-8xh100.yaml", check_paths=False).flat()
    wrong = []
    for line in (ROOT / "docs" / "config.md").read_text().splitlines():
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # (not at a \|)
        if len(cells) != 4 or not re.fullmatch(r"`[a-z_]+\.[a-z_.]+`", cells[0]):
            continue
        key, said = cells[0].strip("`"), cells[3]
        literal = re.match(r"`([^`]*)`|null\b", said)
        if said.startswith("-"):
            expected = default[key]
        elif literal:
            expected = yaml.safe_load(literal.group(1) or "null")
            if isinstance(paper[key], float):
                expected = float(expected)
        else:
            continue
        if paper[key] != expected and not (isinstance(paper[key], str) and str(expected) == paper[key]):
            wrong.append(f"{key}: docs say {said!r}, the file holds {paper[key]!r}")
    assert wrong == []


def test_a_path_where_a_tracking_uri_belongs_is_told_apart_from_uris(tmp_path, monkeypatch):
    from recfound.config import path_given_as_tracking_uri

    for uri in ("sqlite:/x.db", "sqlite:///x.db", "http://mlflow:5000", "postgresql://u@h/db", "databricks",
                "databricks-uc", "file:/tmp/mlruns"):
        assert path_given_as_tracking_uri(uri) is None, uri
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for uri, store in (("runs/mlflow.db", tmp_path / "runs" / "mlflow.db"), ("mlruns", tmp_path / "mlruns" / "mlflow.db"),
                       ("./runs", tmp_path / "runs" / "mlflow.db"),
                       ("~/runs/mlflow.db", tmp_path / "home" / "runs" / "mlflow.db")):
        assert path_given_as_tracking_uri(uri) == (f"{uri!r} is a path, not a tracking URI: for a SQLite store "
                                                   f"there, give sqlite:///{store}; for a server, its http:// URL")
    with pytest.raises(ConfigError, match=r"^mlflow\.tracking_uri: 'runs/mlflow\.db' is a path"):
        RunConfig().with_overrides({"mlflow.tracking_uri": "runs/mlflow.db"}).tracking_uri()


def test_num_workers_is_a_count_or_an_elastic_range():
    from recfound.config import ConfigError, RunConfig

    fixed, elastic = RunConfig(), RunConfig().with_overrides({"train.num_workers": [1, 4]})
    assert (fixed.train.num_workers, fixed.train.min_workers, fixed.train.max_workers, fixed.train.elastic) == \
        (2, 2, 2, False)
    assert (elastic.train.num_workers, elastic.train.min_workers, elastic.train.max_workers) == ((1, 4), 1, 4)
    assert elastic.train.describe_workers() == "1-4 (elastic)" and elastic.flat()["train.num_workers"] == "[1, 4]"
    for value, reason in (([4, 1], r"\[min, max\] with 1 <= min <= max \(got \(4, 1\)\)"),
                          ([2], "expected a list of 2 values"), ([True, 2], "expected an integer, got True"),
                          (0, "must be an integer >= 1")):
        with pytest.raises(ConfigError, match=rf"train\.num_workers: .*{reason}"):
            RunConfig().with_overrides({"train.num_workers": value})
    with pytest.raises(ConfigError, match=r"train\.num_workers: \[min, max\] \(elastic\) needs train\.zero_stage 1 or 2"):
        RunConfig().with_overrides({"train.num_workers": [1, 2], "train.zero_stage": 3})
    with pytest.raises(ConfigError, match=r"train\.embedding_batch: must be >= the 3 embedding tasks and the 20 workers"):
        RunConfig().with_overrides({"train.num_workers": [1, 20]})  # batches hold the most workers
