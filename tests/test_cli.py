"""The `recfound` command end to end on the synthetic corpus: synth, validate (strict/skip), tokenizer."""

from __future__ import annotations

import json
import shutil

import pytest

from recfound.cli import main
from recfound.tasks import task_names


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    assert main(["data", "synth", "--out", str(root), "--seed", "7", "--scale", "tiny"]) == 0
    return root


def test_validate_reports_per_task_counts_per_split(corpus, capsys):
    from recfound.data.synth import SCALES

    assert main(["data", "validate", str(corpus)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "kind", "train", "val", "test", "skipped"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    for name in task_names():
        expected = [str(SCALES["tiny"][s][name]) for s in ("train", "val", "test")]
        assert rows[name][2:] == [*expected, "0"]


def test_validate_refuses_an_empty_task_file(corpus, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    (copy / "val" / "SA.jsonl").write_text("\n")
    assert main(["data", "validate", str(copy)]) == 1
    assert capsys.readouterr().err.strip() == (f"recfound: error: {copy / 'val' / 'SA.jsonl'}: <file>: no valid records; "
                                               "a task file needs at least one (remove the file to leave the task out)")


def damage(root):
    """Several kinds of damage in a copy: (file, line, field) of the first problem in each file."""
    expected = {}
    sa = root / "train" / "SA.jsonl"
    lines = sa.read_text().splitlines()
    record = json.loads(lines[4])
    record["output"] = "Z"
    lines[4] = json.dumps(record)
    sa.write_text("\n".join(lines) + "\n")
    expected["SA"] = (sa, 5, "output")
    q2i = root / "val" / "Q2I.jsonl"
    raw = q2i.read_bytes().split(b"\n")
    raw[2] = raw[2].replace(b'"query": "', b'"query": "\xff', 1)
    q2i.write_bytes(b"\n".join(raw))
    expected["Q2I"] = (q2i, 3, "<line>")
    pm = root / "test" / "PM.jsonl"
    text = pm.read_text()
    pm.write_text(text[: len(text) - 20])  # cut the last line short, no final newline
    expected["PM"] = (pm, len(text.splitlines()), "<line>")
    return expected


def test_corrupted_copy_strict_and_skip(corpus, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(corpus, copy)
    expected = damage(copy)
    assert main(["data", "validate", str(copy)]) == 1
    err = capsys.readouterr().err
    path, line, field = expected["SA"]  # train is checked first, SA is its first damaged file
    assert f"recfound: error: {path}:{line}: {field}: " in err
    for name in ("Q2I", "PM"):  # each damaged file alone names its own problem
        assert main(["data", "validate", str(copy), "--splits", path_split(expected[name][0])]) == 1
        path, line, field = expected[name]
        assert f"{path}:{line}: {field}: " in capsys.readouterr().err
    assert main(["data", "validate", str(copy), "--policy", "skip"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert rows["SA"][-1] == "1" and rows["Q2I"][-1] == "1" and rows["PM"][-1] == "1"
    assert rows["total"][-1] == "3" and "skipped 3 bad record(s)" in out


def path_split(path):
    return path.parent.name


def test_tokenizer_command(corpus, tmp_path, capsys):
    assert main(["data", "tokenizer", str(corpus), "--out", str(tmp_path / "tok"), "--vocab-size", "600"]) == 0
    assert "tokenizer with 600 tokens" in capsys.readouterr().out
    assert (tmp_path / "tok" / "tokenizer.json").is_file()


def test_the_command_lines_copies_of_names_match_their_sources():
    """The CLI and the config name some choices without importing the modules that define them (readers,
    torch): the copies must stay equal."""
    from recfound.cli import LOG_SOURCES
    from recfound.config import MERGE_METHODS
    from recfound.data.logs.sources import SOURCES
    from recfound.merge.ties import METHODS

    assert LOG_SOURCES == SOURCES and MERGE_METHODS == tuple(METHODS)


def test_unknown_scale_is_a_clear_error(tmp_path, capsys):
    from recfound.cli import SCALE_NAMES
    from recfound.data.synth import SCALES

    assert SCALE_NAMES == tuple(SCALES)
    with pytest.raises(SystemExit) as info:
        main(["data", "synth", "--out", str(tmp_path), "--scale", "huge"])
    assert info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


def test_tokenizer_never_replaces_a_folder_it_did_not_write(corpus, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    assert main(["data", "tokenizer", str(data), "--out", str(data)]) == 1
    assert "exists and is not a folder written by this command" in capsys.readouterr().err
    assert (data / "train" / "SA.jsonl").is_file()


def one_error_line(capsys) -> str:
    """The whole of stderr, which must be one `recfound: error: ...` line; the message."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("recfound: error: "), err
    return err[len("recfound: error: "):].rstrip("\n")


def test_a_missing_registered_model_version_or_alias_is_one_line_naming_what_exists(tmp_path, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    client.create_registered_model("rf-a")
    for _ in range(2):  # their files are never written: reading them fails, after resolving the name
        client.create_model_version("rf-a", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("rf-a", "champion", "2")
    client.create_registered_model("it's")  # MLflow takes an apostrophe in a name
    client.create_model_version("it's", source=(tmp_path / "model").as_uri())
    capsys.readouterr()  # MLflow's own log lines while it created the store
    expected = {
        "models:/no-such-model/1": f"no registered model 'no-such-model' at {uri}; registered models: it's, rf-a",
        "models:/rf-a/7": "registered model 'rf-a' has no version '7'; its versions: 1, 2; "
                          "aliases: champion (version 2)",
        "models:/rf-a/best": "registered model 'rf-a' has no version or alias 'best'; its versions: 1, 2; "
                             "aliases: champion (version 2)",
    }
    for model, message in expected.items():
        assert main(["eval", "run", model, "--data", str(tmp_path), "--tracking-uri", uri]) == 1
        assert one_error_line(capsys) == message
    assert main(["export", "models:/no-such-model/latest", "--task", "SA", "--out", str(tmp_path / "out"),
                 "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == expected["models:/no-such-model/1"]
    assert main(["eval", "run", "models:/it's/9", "--data", str(tmp_path), "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == "registered model \"it's\" has no version '9'; its versions: 1; aliases: none"
    # A version whose files are gone, and one whose folder holds an MLflow model that recfound did not log.
    assert main(["export", "models:/rf-a/champion", "--task", "SA", "--out", str(tmp_path / "out"),
                 "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == ("registered model 'rf-a' version 2: its files could not be downloaded (File "
                                      "model; No such artifact: 'model'): its artifact store was moved or cleaned; "
                                      "register the model again from its run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: elsewhere\n")
    client.create_model_version("it's", source=(tmp_path / "other").as_uri())
    assert main(["eval", "run", "models:/it's/2", "--data", str(tmp_path), "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == ("registered model \"it's\" version 2: not a model recfound logged (it has no "
                                      "adapter, tokenizer, serving artifact)")
    (tmp_path / "other" / "MLmodel").write_text("just words\n")  # YAML, but no MLmodel
    assert main(["eval", "run", "models:/it's/2", "--data", str(tmp_path), "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == ("registered model \"it's\" version 2: its MLmodel file cannot be read "
                                      "(AttributeError): not a model recfound logged")
    client.create_registered_model("it's \"x\"")
    assert main(["eval", "run", "models:/it's \"x\"/1", "--data", str(tmp_path), "--tracking-uri", uri]) == 1
    assert one_error_line(capsys) == ("registered model 'it\\'s \"x\"': a name with both quote marks cannot be "
                                      "looked up by MLflow's filter strings; rename it in the registry")
    assert not (tmp_path / "out").exists()
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert main(["eval", "run", "models:/rf-a/1", "--data", str(tmp_path), "--tracking-uri", missing]) == 1
    assert one_error_line(capsys) == f"{missing}: no MLflow store there (nothing was logged to it); give the store " \
                                     "the runs were logged to (--tracking-uri, or $MLFLOW_TRACKING_URI)"
    assert not (tmp_path / "missing.db").exists()  # looking for a model created no store
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.MlflowClient(empty, registry_uri=empty).search_experiments()  # a store with nothing registered
    capsys.readouterr()
    assert main(["eval", "run", "models:/rf-a/1", "--data", str(tmp_path), "--tracking-uri", empty]) == 1
    assert one_error_line(capsys) == f"no registered model 'rf-a' at {empty}; no model is registered there"


def test_a_silent_tracking_server_or_a_path_for_a_uri_is_one_line_at_once(tmp_path, capsys, monkeypatch):
    """A tracking server that does not answer is named within seconds (MLflow's own retries took four minutes
    to end with a connection error); a store's path given where its URI belongs says which URI to give."""
    import socket
    import time

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        silent = f"http://127.0.0.1:{sock.getsockname()[1]}"
    for command in (["export", "models:/rf/1", "--task", "SA", "--out", str(tmp_path / "out")],
                    ["eval", "compare", "some-run"]):
        started = time.monotonic()
        assert main([*command, "--tracking-uri", silent]) == 1
        assert time.monotonic() - started < 30
        assert one_error_line(capsys) == (
            f"the MLflow tracking server at {silent} does not answer (connection refused or host unknown): check "
            "that it runs and its address, or give another with --tracking-uri (or $MLFLOW_TRACKING_URI)")
    from recfound.tracking import store as tracking_store

    monkeypatch.setattr(tracking_store, "SERVER_CHECK_S", 1.0)
    with socket.socket() as sock:  # a server that takes the connection and never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        mute = f"http://127.0.0.1:{sock.getsockname()[1]}"
        assert main(["eval", "compare", "some-run", "--tracking-uri", mute]) == 1
        assert one_error_line(capsys).startswith(f"the MLflow tracking server at {mute} does not answer (no answer "
                                                 "within 1 s): check that it runs")
    store = tmp_path / "runs" / "mlflow.db"
    assert main(["eval", "compare", "some-run", "--tracking-uri", str(store)]) == 1
    assert one_error_line(capsys) == (f"{str(store)!r} is a path, not a tracking URI: for a SQLite store there, give "
                                      f"sqlite:///{store}; for a server, its http:// URL (--tracking-uri, or "
                                      "$MLFLOW_TRACKING_URI)")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "runs"))
    assert main(["export", "models:/rf/1", "--task", "SA", "--out", str(tmp_path / "out")]) == 1
    assert one_error_line(capsys).startswith(f"{str(tmp_path / 'runs')!r} is a path, not a tracking URI: for a "
                                             f"SQLite store there, give sqlite:///{store};")
    # A command that opens no store does not care what the variable holds.
    assert main(["export", str(tmp_path / "no-run"), "--task", "SA", "--out", str(tmp_path / "out")]) == 1
    assert one_error_line(capsys).startswith(f"{tmp_path / 'no-run'}: no such run folder or adapter file")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_merge_of_a_folder_without_checkpoints_says_how_to_get_some(tmp_path, capsys):
    assert main(["merge", str(tmp_path)]) == 1
    message = one_error_line(capsys)
    assert message.startswith(f"{tmp_path}: no complete checkpoint_* folders, so nothing to merge: train a run")
    assert "name checkpoint folders or adapter files" in message


def test_every_option_and_argument_has_help():
    import argparse

    from recfound.cli import build_parser

    def parsers(parser: argparse.ArgumentParser, name: str):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    missing = [f"{name}: {action.dest}" for name, parser in parsers(build_parser(), "recfound")
               for action in parser._actions if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert not missing


@pytest.mark.parametrize("argv, message", [
    (["data", "tokenizer", "d", "--out", "t", "--vocab-size", "-5"],
     "argument --vocab-size: must be >= 256: the byte-level alphabet alone takes 256 tokens (got -5)"),
    (["data", "tokenizer", "d", "--out", "t", "--vocab-size", "many"], "argument --vocab-size: expected an integer, got 'many'"),
    (["data", "synth", "--out", "d", "--seed", str(2**32)],
     "argument --seed: must be in [0, 2**32): seeds are 32-bit (got 4294967296)"),
    (["data", "build", "x", "--source", "movielens", "--out", "o", "--seed", "-1"],
     "argument --seed: must be in [0, 2**32): seeds are 32-bit (got -1)"),
    (["data", "build", "x", "--source", "movielens", "--out", "o", "--encoding", "bogus"],
     "argument --encoding: unknown text encoding 'bogus' (e.g. utf-8, latin-1, cp1252)"),
    (["data", "build", "x", "--source", "movielens", "--out", "o", "--encoding", "rot13"],  # a codec, not an encoding
     "argument --encoding: unknown text encoding 'rot13' (e.g. utf-8, latin-1, cp1252)"),
])
def test_bad_option_values_are_refused_by_name_before_anything_runs(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(message)


@pytest.mark.parametrize("flag, value, message", [
    ("--negatives", "0", "--negatives: must be >= 1 (got 0)"),
    ("--max-records", "0", "--max-records: must be >= 1 (got 0)"),
    ("--batch-size", "0", "--batch-size: must be >= 1 (got 0)"),
    ("--max-new-tokens", "0", "--max-new-tokens: must be >= 1 (got 0)"),
    ("--workers", "-1", "--workers: must be >= 0 (got -1)"),
])
def test_eval_run_names_the_flag_not_the_config_field(tmp_path, flag, value, message, capsys):
    assert main(["eval", "run", str(tmp_path / "none"), "--data", str(tmp_path / "none"), flag, value]) == 1
    assert capsys.readouterr().err == f"recfound: error: {message}\n"


def test_config_errors_for_a_seed_too_large_and_a_folder_given_as_config(tmp_path, capsys):
    assert main(["train", "--set", f"run.seed={2**64}"]) == 1
    assert capsys.readouterr().err == (f"recfound: error: --set: run.seed: must be in [0, 2**32): seeds are 32-bit "
                                       f"(got {2**64})\n")
    assert main(["train", "--config", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"recfound: error: {tmp_path}: cannot read the config file: {tmp_path}: a "
                                       "folder, not a file\n")
