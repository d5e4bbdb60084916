"""Sweep definitions without running anything: the shipped sweeps load and check, every mistake is a
ConfigError naming the file and the key (raised before Ray starts), `--set` semantics, the Tune search
space, the search algorithm and the scheduler, the per-trial configs, the tables and the best config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from recfound.config import ConfigError, load_config
from recfound.tune import best_config, load_sweep, searched_config, trial_config
from recfound.tune.report import (TrialRow, ablation_table, best_row, trial_row, trial_table, variant_summary,
                                  write_best_config)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # sweep files name their base config relative to the project


def write(tmp_path, **keys) -> Path:
    """A small valid sweep file with `keys` replaced (a value of None drops the key)."""
    definition = {"name": "t", "overrides": {"train.steps": 20, "checkpoint.every": 5, "sched.eval_interval": 1},
                  "space": {"sched.window": {"type": "int", "low": 4, "high": 16}},
                  "search": "optuna", "scheduler": "asha", "trials": 2}
    definition.update(keys)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in definition.items() if v is not None}))
    return path


def test_every_shipped_sweep_loads_and_checks():
    assert {p.name for p in SHIPPED} == {"s2sched.yaml", "experts.yaml", "ablation.yaml"}
    for path in SHIPPED:
        spec = load_sweep(path.relative_to(REPO))
        assert spec.name == path.stem and spec.base == "jobs/configs/demo.yaml"
        assert spec.base_config.train.cpus_per_worker == 0.5 and spec.max_concurrent_trials == 1
    s2sched = load_sweep("sweeps/s2sched.yaml")
    assert [d.path for d in s2sched.space] == ["sched.warmup_ratio", "sched.window", "sched.temperature"]
    experts = load_sweep("sweeps/experts.yaml")
    assert {d.path for d in experts.space} == {"tmole.experts.embedding", "tmole.experts.shared",
                                               "tmole.experts.generative", "tmole.rank"}
    ablation = load_sweep("sweeps/ablation.yaml")
    assert ablation.search == "grid" and ablation.scheduler == "none" and ablation.total_trials() == 5
    variants = {name: searched_config(ablation, {"variant": name}) for name in ablation.variants}
    assert [(c.merge.enabled, c.sched.mode, c.tmole.mode) for c in variants.values()] == [
        (True, "s2sched", "tmole"), (False, "s2sched", "tmole"), (False, "uniform", "tmole"),
        (False, "s2sched", "lora"), (False, "uniform", "lora")]


def test_shipped_sweeps_take_the_gpu_cluster_config():
    overrides = ["base=jobs/configs/mistral7b-8xh100.yaml", "overrides={}", "resources={trial_cpus: 1}"]
    for path in SHIPPED:
        config = load_sweep(path.relative_to(REPO), overrides).base_config
        assert (config.train.num_workers, config.train.use_gpu, config.train.steps) == (8, True, 360)


@pytest.mark.parametrize("keys, message", [
    ({"space": {"sched.windw": {"type": "int", "low": 4, "high": 8}}},
     "space.sched.windw: unknown config path (did you mean sched.window?)"),
    ({"space": {"sched.window": {"type": "int", "low": 8, "high": 4}}},
     "space.sched.window: empty range: low (8) must be < high (4)"),
    ({"space": {"sched.temperature": {"type": "uniform", "low": 2.0, "high": 2.0}}},
     "space.sched.temperature: empty range"),
    ({"space": {"tmole.experts.shared": {"type": "choice", "values": [0, 2]}},
      "overrides": {"train.steps": 20, "checkpoint.every": 5, "tmole.experts": {"embedding": 0, "generative": 0}}},
     "space.tmole.experts.shared: tmole.experts.shared=0 gives a config a trial cannot run: tmole.experts: "
     "embedding + shared + generative must be > 0"),
    ({"space": {"tmole.experts.embedding": {"type": "int", "low": 0, "high": 2},
                "tmole.experts.shared": {"type": "int", "low": 0, "high": 2}}},
     "space: tmole.experts.embedding=0, tmole.experts.shared=0 gives a config a trial cannot run: tmole.experts: "
     "embedding + shared must be > 0 in tmole mode"),
    ({"space": {"tmole.experts": {"type": "choice", "values": [{"shared": 1}]}}},
     "space.tmole.experts: is a section; search its values one by one: tmole.experts.embedding"),
    ({"space": {"sched.window": {"type": "grid", "values": [4, 8]}}},
     "space.sched.window.type: grid values are enumerated, which Optuna's TPE does not do"),
    ({"space": {"sched.window": {"type": "choice", "values": [1, 8]}}},
     "space.sched.window: sched.window=1 gives a config a trial cannot run: sched.window: must be >= 2"),
    ({"space": {"sched.window": {"type": "choice", "values": [4, 4]}}},
     "space.sched.window.values: names a value twice"),
    ({"space": {"sched.window": {"type": "choice", "values": []}}}, "space.sched.window.values: expected a non-empty"),
    ({"space": {"tmole.targets": {"type": "choice", "values": [["q_proj"], ["v_proj"]]}}},
     "space.tmole.targets.values: Optuna chooses among plain values"),
    ({"space": {"sched.window": {"type": "int", "low": 4}}}, "space.sched.window.high: is required"),
    ({"space": {"sched.window": {"type": "int", "low": 4, "high": 8, "step": 2}}},
     "space.sched.window.step: unknown key for int (it takes: low, high, log)"),
    ({"space": {"sched.window": {"type": "normal", "low": 4, "high": 8}}}, "space.sched.window.type: must be one of"),
    ({"space": {"sched.temperature": {"type": "loguniform", "low": 0, "high": 8}}},
     "space.sched.temperature.low: a log scale needs low > 0"),
    ({"space": {"sched.window": {"type": "int", "low": 4.5, "high": 8}}},
     "space.sched.window.low: expected an integer, got 4.5"),
    ({"space": {"run.name": {"type": "choice", "values": ["a", "b"]}}},
     "space.run.name: is set by the sweep for every trial and cannot be searched"),
    ({"space": {"sched.window": [4, 8]}}, "space.sched.window: expected a mapping such as"),
    ({"space": None}, "space: nothing to sweep"),
    ({"trails": 3}, "trails: unknown key (did you mean trials?)"),
    ({"trials": None}, "trials: is required"),
    ({"trials": 0}, "trials: must be >= 1 (got 0)"),
    ({"name": "my sweep"}, "name: must be a folder name"),
    ({"name": "x" * 86}, "name: at most 85 characters: trial runs are named <name>-<trial id> (up to 100); got 86"),
    ({"name": None}, "name: is required"),
    ({"search": "bayes"}, "search: must be one of optuna, grid, random (got bayes)"),
    ({"scheduler": "pbt"}, "scheduler: must be one of asha, none"),
    ({"metric": "accuracy"}, "metric: must be one of val_loss/mean, val_loss/embedding, val_loss/generative"),
    ({"mode": "lowest"}, "mode: must be one of min, max"),
    ({"base": "jobs/configs/nope.yaml"}, "base: no such config file: jobs/configs/nope.yaml"),
    ({"overrides": {"train.stepz": 10}}, "overrides.train.stepz: unknown key (did you mean train.steps?)"),
    ({"overrides": {"train.steps": 20, "checkpoint.every": 5, "sched.eval_interval": 10}},
     "overrides.sched.eval_interval: must be <= checkpoint.every (5) in a sweep"),
    ({"overrides": {"train.steps": 20, "checkpoint.every": 20}},
     "overrides.checkpoint.every: must be < train.steps (20) under ASHA"),
    ({"asha": {"grace_period": 18}}, "asha.grace_period: 18 must be <= 15, the last checkpoint before the last step"),
    ({"asha": {"reduction_factor": 1}}, "asha.reduction_factor: must be > 1"),
    ({"asha": {"grace": 5}}, "asha.grace: unknown key (did you mean grace_period?)"),
    ({"asha": {"grace_period": 5}, "scheduler": "none"}, "asha: options given, but scheduler is none"),
    ({"resources": {"gpus_per_worker": 2}}, "resources.gpus_per_worker: must be 0 or 1"),
    ({"resources": {"cpus": 2}}, "resources.cpus: unknown key (did you mean cpus_per_worker?)"),
    ({"resources": {"trial_cpus": 0}}, "resources.trial_cpus: must be > 0 (got 0.0)"),
    ({"resources": {"workers": 32}}, "resources: train.embedding_batch: must be >= the 3 embedding tasks and the 32"),
    ({"search": "grid"}, "space.sched.window.type: search: grid enumerates values, and the int range"),
    ({"variants": {"bad": {"tmole.experts": {"embedding": 0, "shared": 0}}}},
     "variants.bad.tmole.experts: embedding + shared must be > 0 in tmole mode"),
    ({"variants": {"x": {"run.name": "y"}}}, "variants.x.run.name: is set by the sweep for every trial"),
    ({"variants": {}}, "variants: must name at least one variant"),
    ({"storage": "s3://acme/sweeps"}, "storage: must be a local folder: Tune keeps a sweep's state on the machine"),
    ({"seed": 2**32}, "seed: must be in [0, 2**32): seeds are 32-bit (got 4294967296)"),
])
def test_a_mistake_is_refused_naming_the_key(tmp_path, keys, message):
    path = write(tmp_path, **keys)
    with pytest.raises(ConfigError) as caught:
        load_sweep(path)
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert message in str(caught.value)


def test_unreadable_files_name_the_problem(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line 2, column 1: invalid YAML"):
        load_sweep(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- name\n")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping of sweep keys at the top level"):
        load_sweep(tmp_path / "list.yaml")


def test_the_cli_refuses_a_bad_sweep_before_ray_starts(tmp_path, capsys, monkeypatch):
    import recfound.cluster
    from recfound.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a sweep that should have been refused")

    monkeypatch.setattr(recfound.cluster, "ray_session", no_ray)
    path = write(tmp_path, space={"sched.windw": {"type": "int", "low": 4, "high": 8}})
    assert main(["sweep", str(path)]) == 1
    assert "space.sched.windw: unknown config path (did you mean sched.window?)" in capsys.readouterr().err
    assert main(["sweep", "sweeps/ablation.yaml", "--check"]) == 0
    assert "5 trial(s), search grid" in capsys.readouterr().out


def test_set_replaces_a_key_or_sets_one_entry_inside_it(tmp_path):
    path = write(tmp_path, variants={"a": {}, "b": {"sched.mode": "uniform"}})
    spec = load_sweep(path, ["trials=5", "overrides.train.lr=1e-3", "space.sched.temperature={type: loguniform, "
                             "low: 1, high: 10}", "variants.a.merge.enabled=false", "resources.workers=1"])
    assert spec.trials == 5 and spec.base_config.train.lr == 1e-3 and spec.base_config.train.steps == 20
    assert [d.path for d in spec.space] == ["sched.window", "sched.temperature"]
    assert spec.variants == {"a": {"merge.enabled": False}, "b": {"sched.mode": "uniform"}}
    assert spec.base_config.train.num_workers == 1
    replaced = load_sweep(path, ["overrides={}", "space={sched.window: {type: choice, values: [8, 16]}}"])
    assert replaced.base_config.train.steps == load_config(None).train.steps
    assert replaced.space[0].values == (8, 16)
    with pytest.raises(ConfigError, match="--set: trails: unknown key"):
        load_sweep(path, ["trails=3"])


def test_a_bad_value_given_with_set_is_blamed_on_set_and_one_from_the_file_on_the_file(tmp_path):
    path = write(tmp_path, variants={"a": {}})
    for item, message in (("trials=abc", "--set: trials: expected an integer, got 'abc'"),
                          ("overrides.train.steps=abc", "--set: overrides.train.steps: expected an integer, got 'abc'"),
                          ("overrides={train.steps: abc}", "--set: overrides.train.steps: expected an integer"),
                          ("storage=s3://acme/sweeps", "--set: storage: must be a local folder"),
                          ("storage=hdfs://acme/sweeps", "--set: storage: hdfs://acme/sweeps: unsupported storage "
                                                         "scheme 'hdfs'"),
                          ("variants.a.train.lr=abc", "--set: variants.a.train.lr: expected a number")):
        with pytest.raises(ConfigError) as caught:
            load_sweep(path, [item])
        assert str(caught.value).startswith(message), (item, str(caught.value))
    with pytest.raises(ConfigError) as caught:  # the file's mistake, whatever else --set changed
        load_sweep(write(tmp_path, trials="abc"), ["overrides.train.lr=1e-3"])
    assert str(caught.value).startswith(f"{path}: trials: expected an integer, got 'abc'")


def test_set_reaches_a_variant_whose_name_holds_dots(tmp_path):
    path = write(tmp_path, variants={"w/o M.M.": {"merge.enabled": False}, "w/o M": {}})
    spec = load_sweep(path, ["variants.w/o M.M..train.lr=0.001", "variants.w/o M.train.lr=0.002",
                             "variants.new.sched.window=8"])
    assert spec.variants == {"w/o M.M.": {"merge.enabled": False, "train.lr": 0.001}, "w/o M": {"train.lr": 0.002},
                             "new": {"sched.window": 8}}
    replaced = load_sweep(path, ["variants.w/o M.M.={sched.window: 8}"])  # a whole variant, by its dotted name
    assert replaced.variants == {"w/o M.M.": {"sched.window": 8}, "w/o M": {}}


def test_space_conversion_to_tune_and_real_optuna_suggestions():
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

    from recfound.tune.space import param_space, search_algorithm, trial_scheduler

    spec = load_sweep("sweeps/experts.yaml", ["space.sched.temperature={type: loguniform, low: 0.5, high: 20}",
                                              "space.sched.warmup_ratio={type: uniform, low: 0, high: 0.3}"])
    space = param_space(spec)
    assert isinstance(space["tmole.experts.shared"], Integer)
    assert (space["tmole.experts.shared"].lower, space["tmole.experts.shared"].upper) == (1, 4)  # high inclusive
    assert isinstance(space["tmole.rank"], Categorical) and space["tmole.rank"].categories == [4, 8, 16, 32]
    assert isinstance(space["sched.temperature"], Float) and isinstance(space["sched.temperature"].sampler, LogUniform)
    searcher = OptunaSearch(space=space, metric=spec.metric, mode=spec.mode, seed=0)
    for i in range(20):
        suggested = searcher.suggest(f"t{i}")
        assert 1 <= suggested["tmole.experts.shared"] <= 3 and 0 <= suggested["tmole.experts.embedding"] <= 3
        assert suggested["tmole.rank"] in (4, 8, 16, 32) and 0.5 <= suggested["sched.temperature"] <= 20
        trial_config(spec, suggested, f"t{i}")  # every suggestion is a valid training config
    assert isinstance(search_algorithm(spec), OptunaSearch)
    asha = trial_scheduler(spec)
    assert isinstance(asha, ASHAScheduler) and asha._time_attr == "step" and asha._max_t == 30
    ablation = load_sweep("sweeps/ablation.yaml")
    assert param_space(ablation) == {"variant": {"grid_search": list(ablation.variants)}}
    generator = search_algorithm(ablation)  # Tune leaves a generator's concurrency to the generator itself
    assert isinstance(generator, BasicVariantGenerator) and generator.max_concurrent == 1
    assert trial_scheduler(ablation) is None
    grid = load_sweep("sweeps/ablation.yaml", ["space.sched.window={type: choice, values: [8, 16]}"])
    assert param_space(grid)["sched.window"] == {"grid_search": [8, 16]} and grid.total_trials() == 10
    optuna_variants = load_sweep("sweeps/ablation.yaml", ["search=optuna", "trials=3"])
    assert isinstance(param_space(optuna_variants)["variant"], Categorical) and optuna_variants.total_trials() == 3


def test_trial_and_best_configs(tmp_path, monkeypatch):
    spec = load_sweep("sweeps/ablation.yaml", ["overrides.run.output_dir=out", "overrides.data.root=data"])
    params = {"variant": "w/o M.M. & TMoLE"}
    trial = trial_config(spec, params, "abc_00001")
    assert trial.run.name == "ablation-abc_00001" and trial.mlflow.register_as is None
    assert trial.tmole.mode == "lora" and not trial.merge.enabled
    assert trial.run.output_dir == str(REPO / "out") and trial.data.root == str(REPO / "data")
    assert trial.mlflow.tracking_uri == spec.tracking_uri == f"sqlite:///{REPO / 'out' / 'mlflow.db'}"
    assert trial.mlflow.artifact_root == spec.artifact_root == str(REPO / "out" / "mlartifacts")
    monkeypatch.chdir(tmp_path)  # a trial runs in a folder of its own: paths stay those of the sweep's folder
    assert trial_config(spec, params, "abc_00001") == trial
    best = best_config(spec, params)
    assert best.run.name == "ablation-best" and best.mlflow.register_as == spec.base_config.mlflow.register_as
    assert best.run.output_dir == "out" and best.tmole.mode == "lora"  # paths as the sweep gave them
    row = TrialRow("abc_00001", params, "finished", metric=3.5)
    path = write_best_config(spec, row, tmp_path / "best.yaml")
    assert load_config(path, check_paths=False) == best
    assert path.read_text().startswith("# The best trial of sweep 'ablation'")


def test_rows_tables_and_the_best_trial():
    spec = load_sweep("sweeps/ablation.yaml")
    finished = {"finished": 1, "step": 30, "val_loss/mean": 2.5, "test_avg/generative": 0.41,
                "test_avg/embedding": 0.62, "done": True}
    rows = [trial_row("b", {"variant": "w/o M.M."}, {**finished, "val_loss/mean": 2.4}, None, spec, ended=True),
            trial_row("a", {"variant": "RecFound"}, finished, None, spec, ended=True),
            trial_row("c", {"variant": "w/o M.M. & TMoLE"}, {}, "RayTaskError: boom", spec, ended=True),
            trial_row("d", {"variant": "w/o M.M. & S2Sched"}, {"step": 10, "val_loss/mean": 3.0}, None, spec, True)]
    assert [row.status for row in rows] == ["finished", "finished", "error", "stopped"]
    assert best_row(spec, rows).trial_id == "b"
    table = ablation_table(spec, rows).splitlines()
    assert table[0].split() == ["variant", "generative", "(avg.)", "embedding", "(avg.)", "val_loss/mean", "status"]
    assert [line.split()[0] for line in table[2:]] == ["RecFound", "w/o", "w/o", "w/o"]
    assert "0.410" in table[2] and "0.620" in table[2] and "2.5000" in table[2]
    assert "b *" in trial_table(spec, rows, best_row(spec, rows))
    asha = load_sweep("sweeps/s2sched.yaml")
    stopped = trial_row("e", {}, {"step": 10, "val_loss/mean": 3.0, "done": True}, None, asha, ended=True)
    running = trial_row("f", {}, {"step": 10, "val_loss/mean": 3.0}, None, asha, ended=False)
    assert (stopped.status, running.status) == ("stopped by ASHA", "unfinished")


def test_variants_run_over_seeds_get_their_mean_and_sample_spread():
    """Table 4 with seeds: each variant's finished trials averaged; the spread is the sample standard
    deviation (n - 1), worked by hand here; unfinished trials are left out; one trial per variant: no summary."""
    spec = load_sweep("sweeps/ablation.yaml", ["space={run.seed: {type: grid, values: [0, 1, 2]}}"])

    def row(trial_id, variant, generative, embedding, loss, status_metrics=None):
        metrics = status_metrics if status_metrics is not None else {
            "finished": 1, "val_loss/mean": loss, "test_avg/generative": generative, "test_avg/embedding": embedding}
        return trial_row(trial_id, {"variant": variant}, metrics, None, spec, ended=True)

    rows = [row("a", "RecFound", 0.10, 0.50, 2.0), row("b", "RecFound", 0.20, 0.70, 3.0),
            row("c", "RecFound", 0.30, 0.60, 4.0), row("d", "w/o M.M.", 0.40, 0.30, 1.5),
            row("e", "w/o M.M.", 0.9, 0.9, 9.0, {"step": 10, "val_loss/mean": 9.0})]  # stopped: left out
    lines = variant_summary(spec, rows).splitlines()
    assert lines[0].split() == ["variant", "trials", "generative", "(avg.)", "embedding", "(avg.)", "val_loss/mean"]
    # RecFound: generative mean 0.2, sd sqrt((0.01 + 0 + 0.01) / 2) = 0.1; embedding 0.6, sd 0.1; loss 3, sd 1.
    assert lines[2].split() == ["RecFound", "3", "0.200", "±", "0.100", "0.600", "±", "0.100", "3.0000", "±", "1.0000"]
    assert lines[3].split() == ["w/o", "M.M.", "1", "0.400", "0.300", "1.5000"]
    assert lines[4].split() == ["w/o", "M.M.", "&", "S2Sched", "0", "-", "-", "-"]
    assert variant_summary(spec, rows[2:4]) is None
    # Another searched key besides the seed keeps its values apart; a trial that did not evaluate is counted
    # in the metric but not in the test averages, and says so.
    lr = load_sweep("sweeps/ablation.yaml", ["space={run.seed: {type: grid, values: [0, 1]}, "
                                             "train.lr: {type: grid, values: [0.001, 0.01]}}"])
    rows = [trial_row(str(i), {"variant": "RecFound", "train.lr": lr_value, "run.seed": seed},
                      {"finished": 1, "val_loss/mean": loss, "test_avg/embedding": 0.5,
                       **({} if generative is None else {"test_avg/generative": generative})}, None, lr, ended=True)
            for i, (lr_value, seed, loss, generative) in enumerate([(0.001, 0, 1.0, 0.2), (0.001, 1, 3.0, None),
                                                                      (0.01, 0, 5.0, 0.1), (0.01, 1, 5.0, 0.3)])]
    lines = variant_summary(lr, rows).splitlines()
    assert lines[0].split()[:3] == ["variant", "train.lr", "trials"]
    assert lines[2].split() == ["RecFound", "0.001", "2", "0.200", "(n=1)", "0.500", "±", "0.000", "2.0000", "±",
                                "1.4142"]
    assert lines[3].split() == ["RecFound", "0.01", "2", "0.200", "±", "0.141", "0.500", "±", "0.000", "5.0000", "±",
                                "0.0000"]


def test_a_sweep_whose_runs_go_to_a_bucket_keeps_tunes_state_in_a_local_folder(tmp_path):
    """Trial run folders may live in a bucket; Tune's experiment state needs the sweep's local `storage`."""
    overrides = ["overrides={run.output_dir: 's3://acme/runs', mlflow.tracking_uri: 'sqlite:///x.db'}"]
    spec = load_sweep("sweeps/s2sched.yaml", overrides)
    assert spec.base_config.run.output_dir == "s3://acme/runs"  # kept as given, not made a local path
    with pytest.raises(ConfigError, match=r"storage: run\.output_dir s3://acme/runs is on an object store; a sweep "
                                          "keeps Tune's state in a local folder"):
        spec.storage_path()
    local = load_sweep("sweeps/s2sched.yaml", [*overrides, f"storage={tmp_path / 'sweeps'}"])
    assert local.storage_path() == tmp_path / "sweeps"
