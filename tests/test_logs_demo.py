"""`recfound demo --source movielens DIR`: builds the tasks from the ML-100K fixture, trains on the tasks the
build can feed (a short run on the session's cluster, in a process of its own; among them the tasks the build
declared in its task file, which the workers and the evaluation's Ray task learn from the run) and prints the
full-catalog evaluation with the model beside both baselines; the task choice; the command's mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from recfound.cli import main
from recfound.logs_demo import tasks_line, trainable_tasks
from test_train_job import set_arguments

FIXTURE = Path(__file__).parent / "fixtures" / "logs" / "ml-100k"
# The fixture's build (test_logs_build): records per split and task.
RECORDS = {"train": {"U2I": 4, "SR": 2, "MIM": 2, "PREF": 4, "WI": 4, "RP": 4, "UP": 3, "UAP": 2, "IP": 5, "I2I": 2,
                     "PRP": 1, "Q2I": 5},
           "val": {"U2I": 3, "SR": 2, "MIM": 2, "PREF": 3, "WI": 3, "RP": 3, "IP": 2, "PRP": 1, "Q2I": 2},
           "test": {"U2I": 3, "SR": 2, "MIM": 2, "PREF": 3, "WI": 3, "RP": 3, "IP": 1, "Q2I": 1}}
TRAINED = ["U2I", "SR", "MIM", "PREF", "WI", "RP", "IP", "Q2I"]
LINE = ("training on the 8 built tasks with records to train, validate and evaluate: U2I, SR, MIM, PREF, WI, RP, "
        "IP, Q2I; left out: UP (no val records), UAP (no val records), I2I (no val records), PRP (1 val record "
        "for 2 workers)")


def test_the_demo_trains_on_the_tasks_every_split_has():
    tasks, left_out = trainable_tasks(RECORDS, workers=2, eval_split="test")
    assert tasks == TRAINED and tasks_line(tasks, left_out) == LINE
    # One worker: PRP's one validation record is enough, but it has no test record; without an evaluation it trains.
    assert trainable_tasks(RECORDS, 1, "test")[1]["PRP"] == "no test records"
    assert "PRP" in trainable_tasks(RECORDS, 1, None)[0]


@pytest.mark.parametrize("arguments", [["--source", "movielens"], [str(FIXTURE)]])
def test_source_and_logs_go_together(arguments, capsys):
    assert main(["demo", *arguments]) == 1
    assert capsys.readouterr().err.strip() == (
        "recfound: error: recfound demo: give --source and the logs together (e.g. recfound demo --source "
        "movielens ml-100k/), or neither for the synthetic corpus")


@pytest.mark.timeout(480)  # one short training run: about 90 s on 2 idle cores
def test_demo_on_movielens_logs_prints_the_model_beside_both_baselines(ray_cluster, tmp_path, restored_registry):
    overrides = ["run.output_dir=runs", "train.steps=2", "checkpoint.every=2", "merge.last=1", "sched.window=2",
                 "sched.eval_interval=1", "sched.warmup_ratio=0.5", "data.val_per_task=2", "data.corpus_vocab=256",
                 "model.pretrain_steps=20",  # the fixture's own corpus: a short pre-training of its own
                 "eval.scorer=none", "eval.base=false", "eval.max_new_tokens=2",
                 "eval.workers=1",  # a Ray task: the model source carries the declared tasks there
                 "mlflow.register_as=null"]
    env = {key: value for key, value in os.environ.items() if key != "RECFOUND_VERBOSE"}
    done = subprocess.run([str(Path(sys.executable).parent / "recfound"), "demo", "--source", "movielens", str(FIXTURE),
                           *set_arguments(overrides)], env=env, capture_output=True, text=True, timeout=420,
                          cwd=tmp_path)
    console = done.stdout
    assert done.returncode == 0, (console + done.stderr)[-4000:]
    assert LINE in console.splitlines()
    assert (tmp_path / "runs" / "recfound-demo-data" / "build.json").is_file()
    table = console[console.index("Full catalog (8 items; each user's earlier items left out)"):].splitlines()
    assert table[1].split()[:7] == ["model", "U2I", "recall@10", "U2I", "ndcg@10", "U2I", "mrr@20"]
    rows = {line.split()[0]: line.split()[1:] for line in table[3:6]}
    assert list(rows) == ["trained", "popularity", "item-kNN"]
    assert all(len(values) == len(rows["popularity"]) and values[0] != "-" for values in rows.values())
    assert table[6].startswith("trained is below ")  # or above all: the verdict line follows the table
    # The same numbers in MLflow, side by side.
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("recfound").experiment_id])
    metrics = run.data.metrics
    assert {"test_catalog/U2I_recall_at_10", "test_popularity_catalog/U2I_recall_at_10",
            "test_item-kNN_catalog/SR_ndcg_at_10", "test_item-kNN/SR"} <= set(metrics)
    assert f"{metrics['test_popularity_catalog/U2I_recall_at_10']:.4f}" == rows["popularity"][0]
    # The tasks the build declared in its task file (not in the code) trained, were scheduled and evaluated: the
    # workers' model has a task-table row for each, after the 13 built-ins.
    from recfound.model.state import read_adapter
    from recfound.task_file import read_task_file

    declared = [task.name for task in read_task_file(tmp_path / "runs" / "recfound-demo-data" / "tasks.yaml")]
    header, _ = read_adapter(tmp_path / "runs" / "recfound-demo" / "merged.safetensors")
    assert header["tasks"][13:] == declared and {"MIM", "PREF", "WI", "RP"} <= set(declared)
    for task in ("MIM", "PREF", "WI", "RP"):
        for prefix in ("ratio", "records", "val_loss"):
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, f"{prefix}/{task}")) == [1, 2]
        assert f"test/{task}" in metrics
    summary = (tmp_path / "runs" / "recfound-demo" / "summary.txt").read_text(encoding="utf-8")
    assert any(line.split()[:1] == ["WI"] and "f1_yes" in line.split() for line in summary.splitlines()), summary
