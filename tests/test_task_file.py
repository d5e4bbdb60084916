"""Tasks declared in a task file (`recfound.task_file`): every bad file is one line naming the file, the task
and the key; the tasks join the registry after the 13 built-ins in file order; a run config and a data root
bring them in; a pickled config and an adapter file register them in a fresh process. (A short training run on
tasks a task file declares, scheduled, evaluated in a Ray task and logged: test_logs_demo.)"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recfound import tasks as registry
from recfound.config import ConfigError, config_from_dict, load_config
from recfound.task_file import (GENERATIVE_METRICS, TaskFileError, load_root_tasks, load_task_file, read_task_file,
                                task_entry, tasks_from_entries)
from recfound.tasks import AnswerType, Kind, Task, added_tasks, get_task, task_index, task_names

REPO = Path(__file__).resolve().parents[1]
BUILTIN = ["U2I", "Q2I", "I2I", "QR", "AVE", "AG", "SR", "SA", "UP", "AP", "PRP", "PM", "IP"]
SEEN = {"name": "SEEN", "kind": "generative", "description": "was an item in the user's history",
        "metric": "f1_yes", "answer_type": "yes_no",
        "instructions": ["Did this shopper already buy the item named last? Answer yes or no.",
                         "Is the final item one of the listed purchases? Reply yes or no.",
                         "Check the purchase list for the last item and say yes or no."]}
TWIN = {"name": "TWIN", "kind": "embedding", "description": "product code -> its listing", "metric": "ndcg@20",
        "answer_type": "none", "labels": [],
        "instructions": ["Embed this product code to find its listing.",
                         "Encode the code below so that the listing it stands for lies close by.",
                         "Represent the product code for looking up its catalogue entry."]}


def write_task_file(path: Path, *entries: dict, version: int = 1) -> Path:
    path.write_text(yaml.safe_dump({"version": version, "tasks": list(entries)}, sort_keys=False), encoding="utf-8")
    return path


# --- bad files ------------------------------------------------------------------------------------


def changed(entry: dict, **values) -> dict:
    """`entry` with keys replaced (a value None removes the key)."""
    return {key: value for key, value in {**entry, **values}.items() if value is not None}


BAD_TASKS = [  # (the tasks list, the error after "<file>: ")
    ([changed(SEEN, metrics="f1_yes")], "tasks[0] (SEEN): metrics: unknown key (did you mean metric?)"),
    ([changed(SEEN, colour="red")], "tasks[0] (SEEN): colour: unknown key (a task has the keys name, kind, "
                                    "description, metric, answer_type, instructions, labels)"),
    ([changed(SEEN, metric=None)], "tasks[0] (SEEN): metric: missing; a task needs the keys name, kind, "
                                   "description, metric, answer_type, instructions"),
    ([changed(SEEN, name=None)], "tasks[0]: name: missing; a task needs the keys"),
    ([changed(SEEN, kind="generator")], "tasks[0] (SEEN): kind: 'generator' is not one of embedding, generative"),
    ([changed(SEEN, answer_type="boolean")], "tasks[0] (SEEN): answer_type: 'boolean' is not one of none, "
                                             "free_text, option_letter, yes_no, label_set, attribute_json"),
    ([changed(SEEN, answer_type="none")], "tasks[0] (SEEN): answer_type: generative tasks need one of free_text, "
                                          "option_letter, yes_no, label_set, attribute_json"),
    ([changed(TWIN, answer_type="free_text")], "tasks[0] (TWIN): answer_type: embedding tasks have answer type "
                                               "none (got free_text)"),
    ([changed(SEEN, metric="accuracy")], "tasks[0] (SEEN): metric: 'accuracy' does not score yes_no answers; "
                                         "use f1_yes"),
    ([changed(SEEN, answer_type="option_letter", metric="recall@5")],
     "tasks[0] (SEEN): metric: 'recall@5' does not score option_letter answers; use recall@1 or macro_f1"),
    ([changed(TWIN, metric="recall@20")], "tasks[0] (TWIN): metric: 'recall@20' does not score embedding tasks; "
                                          "use mrr@K or ndcg@K (e.g. mrr@20)"),
    ([changed(SEEN, instructions=SEEN["instructions"][:2])],
     "tasks[0] (SEEN): instructions: give at least 3 distinct wordings (got 2)"),
    ([changed(SEEN, instructions=[SEEN["instructions"][0]] * 3)],
     "tasks[0] (SEEN): instructions: give at least 3 distinct wordings (got 1)"),
    ([changed(SEEN, instructions="Answer yes or no.")],
     "tasks[0] (SEEN): instructions: expected a list of non-empty strings, got 'Answer yes or no.'"),
    ([TWIN, changed(SEEN, name="SR")], "tasks[1] (SR): name: SR is a built-in task; give the new task another name"),
    ([SEEN, TWIN, changed(TWIN, description="again")],
     "tasks[2] (TWIN): name: TWIN is declared twice (also tasks[1]); give each task its own name"),
    ([changed(SEEN, name="seen")], "tasks[0] (seen): name: 'seen' is not an upper-case identifier; use letters, "
                                   "digits and '_', e.g. MIM"),
    ([changed(SEEN, labels=["yes", "no"])], "tasks[0] (SEEN): labels: only label_set tasks have labels; remove "
                                            "them or set answer_type: label_set"),
    ([changed(SEEN, answer_type="label_set", metric="accuracy", labels=["click"])],
     "tasks[0] (SEEN): labels: a label_set task needs at least 2 distinct labels (got 1)"),
    ([changed(SEEN, description="")], "tasks[0] (SEEN): description: expected a non-empty string, got ''"),
    (["SEEN"], "tasks[0]: expected a mapping of name, kind, description, metric, answer_type, instructions, "
               "labels, got 'SEEN'"),
]


@pytest.mark.parametrize("entries,message", BAD_TASKS)
def test_a_bad_task_is_one_line_naming_the_file_the_task_and_the_key(tmp_path, entries, message):
    path = write_task_file(tmp_path / "tasks.yaml", *entries)
    with pytest.raises(TaskFileError) as caught:
        read_task_file(path)
    assert str(caught.value).startswith(f"{path}: {message}") and "\n" not in str(caught.value)


@pytest.mark.parametrize("text,message", [
    ("version: 2\ntasks: []\n", "version: unsupported version 2; this recfound reads task files of version 1 "
                                "(write 'version: 1')"),
    ("version: '1'\ntasks: []\n", "version: unsupported version '1'"),
    ("tasks: []\n", "version: missing; a task file needs the keys version, tasks"),
    ("version: 1\n", "tasks: missing; a task file needs the keys version, tasks"),
    ("version: 1\ntasks: []\nvesion: 1\n", "vesion: unknown key (did you mean version?)"),
    ("version: 1\ntasks: {SEEN: {}}\n", "tasks: expected a list of task declarations, got {'SEEN': {}}"),
    ("- version: 1\n", "expected a mapping with the keys version, tasks, got [{'version': 1}]"),
    ("version: 1\ntasks: [\n", "line 3, column 1: invalid YAML"),
    ("version: 1\nversion: 1\ntasks: []\n", "line 2, column 1: invalid YAML: duplicate key 'version'"),
])
def test_a_bad_file_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TaskFileError, match=f"^{_escaped(f'{path}: {message}')}"):
        read_task_file(path)


def test_an_unreadable_file_is_named(tmp_path):
    with pytest.raises(TaskFileError, match=f"^{_escaped(str(tmp_path / 'no.yaml'))}: cannot read the task file"):
        read_task_file(tmp_path / "no.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("version: 1\ntasks: []\n# caf\xe9\n".encode("latin-1"))
    with pytest.raises(TaskFileError, match="latin.yaml: not UTF-8 text \\(byte 26\\); save the file as UTF-8"):
        read_task_file(latin)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)


# --- registration ---------------------------------------------------------------------------------


def test_declared_tasks_follow_the_builtins_in_file_order(tmp_path, restored_registry):
    path = write_task_file(tmp_path / "tasks.yaml", SEEN, TWIN)
    loaded = load_task_file(path)
    assert [t.name for t in loaded] == ["SEEN", "TWIN"]
    assert task_names() == [*BUILTIN, "SEEN", "TWIN"]
    assert (task_index("SEEN"), task_index("TWIN")) == (13, 14)
    assert task_names("embedding") == ["U2I", "Q2I", "I2I", "TWIN"]
    seen = get_task("SEEN")
    assert seen == Task("SEEN", Kind.GENERATIVE, SEEN["description"], "f1_yes", AnswerType.YES_NO,
                        tuple(SEEN["instructions"]))
    assert get_task("TWIN").kind is Kind.EMBEDDING and get_task("TWIN").metric == "ndcg@20"
    assert added_tasks() == (seen, get_task("TWIN"))

    assert load_task_file(path) == loaded and task_names() == [*BUILTIN, "SEEN", "TWIN"]  # again: no change


def test_a_different_task_under_a_registered_name_is_refused_and_nothing_registers(tmp_path, restored_registry):
    load_task_file(write_task_file(tmp_path / "a.yaml", SEEN))
    other = write_task_file(tmp_path / "b.yaml", TWIN, changed(SEEN, description="another meaning"))
    with pytest.raises(TaskFileError, match=_escaped(
            f"{other}: tasks[1] (SEEN): name: a different task SEEN is already registered (by another task file "
            "or register()); rename one of them")):
        load_task_file(other)
    assert task_names() == [*BUILTIN, "SEEN"]  # TWIN, valid on its own, was not registered either


def test_a_task_entry_reads_back_as_the_same_task(restored_registry):
    task = tasks_from_entries([SEEN], "here")[0]
    assert tasks_from_entries([task_entry(task)], "here") == (task,)
    assert task_entry(task) == {**SEEN, "labels": []}


@pytest.mark.parametrize("answer_type,metric", [(t, m) for t, metrics in GENERATIVE_METRICS.items() for m in metrics])
def test_each_generative_metric_a_task_file_allows_is_what_the_evaluation_scores(answer_type, metric,
                                                                                 restored_registry):
    from recfound.eval.metrics import score_generative

    labels = ["click", "skip"] if answer_type is AnswerType.LABEL_SET else []
    entry = changed(SEEN, name="PROBE", answer_type=answer_type.value, metric=metric, labels=labels)
    registry.register_all(tasks_from_entries([entry], "here"))
    reference = {AnswerType.OPTION_LETTER: "A", AnswerType.YES_NO: "yes", AnswerType.LABEL_SET: "click",
                 AnswerType.ATTRIBUTE_JSON: json.dumps([{"attribute": "colour", "value": "red", "source": "title"}]),
                 AnswerType.FREE_TEXT: "a red mug"}[answer_type]
    record = {"output": reference, "options": ["red", "blue"] if answer_type is AnswerType.OPTION_LETTER else []}
    score = score_generative("PROBE", [reference], [record])
    # Free text without a BERTScore encoder falls back to token F1; every right answer scores 1.
    assert (score.metric, score.value) == ("token_f1" if metric == "bertscore_f1" else metric, 1.0)


def test_an_embedding_metric_a_task_file_allows_is_what_the_evaluation_scores(restored_registry):
    from recfound.eval.metrics import score_retrieval

    registry.register_all(tasks_from_entries([changed(TWIN, metric="mrr@5")], "here"))
    score = score_retrieval("TWIN", [1, 2, 10], protocol="full")
    assert score.metric == "mrr@5" and score.value == pytest.approx((1 + 1 / 2 + 0) / 3)


# --- where a run's tasks come from ----------------------------------------------------------------


def test_a_config_registers_its_task_file_and_its_roots(tmp_path, restored_registry):
    root = tmp_path / "data"
    root.mkdir()
    write_task_file(root / "tasks.yaml", TWIN)
    named = write_task_file(tmp_path / "more.yaml", SEEN)
    config = load_config(None, [f"data.root={root}", f"data.tasks_file={named}", "data.tasks=[U2I, TWIN, SA, SEEN]"])
    assert config.task_names("embedding") == ["U2I", "TWIN"] and config.task_names("generative") == ["SA", "SEEN"]
    assert task_names()[13:] == ["TWIN", "SEEN"]  # the root's file, then data.tasks_file
    assert config.data.tasks_file == str(named) and config.flat()["data.tasks_file"] == str(named)


def test_a_missing_task_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=_escaped(f"--set: data.tasks_file: no such file: {tmp_path / 'no.yaml'}")):
        load_config(None, [f"data.tasks_file={tmp_path / 'no.yaml'}"])
    # Not checked where the paths are another machine's (check_paths=False), as data.root is not.
    assert load_config(None, [f"data.tasks_file={tmp_path / 'no.yaml'}"], check_paths=False).data.tasks_file


def test_a_bad_task_file_stops_the_config(tmp_path, restored_registry):
    root = tmp_path / "data"
    root.mkdir()
    write_task_file(root / "tasks.yaml", changed(SEEN, kind="both"))
    with pytest.raises(TaskFileError, match=_escaped(f"{root / 'tasks.yaml'}: tasks[0] (SEEN): kind: 'both'")):
        load_config(None, [f"data.root={root}"])


def test_config_from_dict_reads_no_task_file(tmp_path):
    write_task_file(tmp_path / "tasks.yaml", SEEN)
    with pytest.raises(ConfigError, match="data.tasks: unknown task\\(s\\) SEEN; known tasks: U2I, Q2I"):
        config_from_dict({"data": {"root": str(tmp_path), "tasks": ["U2I", "SA", "SEEN"]}})


def test_reading_a_data_root_registers_its_tasks(tmp_path, restored_registry):
    from recfound.data.validate import validate_dataset

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    write_task_file(root / "tasks.yaml", SEEN)
    write_records(root / "train" / "SEEN.jsonl", [seen_record(i) for i in range(5)])
    summary = validate_dataset(root, ("train",))
    assert summary.counts == {"train": {"SEEN": 5}} and summary.missing["train"] == BUILTIN
    assert load_root_tasks(tmp_path / "elsewhere") == ()  # a root without a task file


def test_a_pickled_config_brings_its_tasks_into_a_fresh_process(tmp_path, restored_registry):
    load_task_file(write_task_file(tmp_path / "tasks.yaml", SEEN, TWIN))
    config = load_config(None, ["data.tasks=[U2I, TWIN, SA, SEEN]"], check_paths=False)
    assert pickle.loads(pickle.dumps(config)) == config
    code = ("import pickle, sys\nfrom recfound.tasks import task_index, task_names\n"
            "config = pickle.loads(sys.stdin.buffer.read())\n"
            "print(task_names()[13:], task_index('SEEN'), task_index('TWIN'), config.task_names())")
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(config), capture_output=True, env=env,
                         check=True, timeout=60).stdout.decode()
    assert out.split("\n")[0] == "['SEEN', 'TWIN'] 13 14 ['U2I', 'SA', 'SEEN', 'TWIN']"


# --- records of SEEN, and an adapter file with the declared tasks ----------------------------------------


def seen_record(i: int) -> dict:
    """Yes when the last item is among the listed purchases (every even record), else no."""
    bought = [f"mug-{(i * 3 + j) % 40:02d}" for j in range(3)]
    probe = bought[i % 3] if i % 2 == 0 else f"lamp-{i:02d}"
    return {"instruction": SEEN["instructions"][i % 3], "input": f"Purchases: {', '.join(bought)}. Item: {probe}",
            "output": "yes" if i % 2 == 0 else "no"}


def write_records(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def test_an_adapter_file_brings_its_declared_tasks_into_a_fresh_process(tmp_path, restored_registry):
    """A model trained on declared tasks is served or evaluated in processes that never read its task file: the
    adapter file's header carries their definitions, and reading the file registers them."""
    from recfound.model.state import read_adapter, save_adapter
    from test_model_tmole import tiny_adapter

    load_task_file(write_task_file(tmp_path / "tasks.yaml", SEEN, TWIN))
    _, adapter = tiny_adapter()
    path = save_adapter(adapter, tmp_path / "adapter.safetensors")
    header, _ = read_adapter(path)
    assert header["tasks"][13:] == ["SEEN", "TWIN"] and header["declared_tasks"] == [{"labels": [], **SEEN}, TWIN]
    code = ("import sys\nfrom recfound.model.state import read_adapter\nfrom recfound.tasks import get_task, task_names\n"
            "read_adapter(sys.argv[1])\nprint(task_names()[13:], get_task('SEEN').metric, get_task('TWIN').kind.value)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "platform")}
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, env=env, check=True,
                         timeout=120).stdout.decode()
    assert out.split("\n")[0] == "['SEEN', 'TWIN'] f1_yes embedding"
