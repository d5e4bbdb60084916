"""The storage layer (`recfound.storage`) against a real S3-compatible server (moto, on loopback) and a
local folder side by side, the run folder's marker and lock on a bucket, and the settings that cannot
live in a bucket refused with one line naming the key."""

from __future__ import annotations

import json

import pytest
import torch

from recfound import storage
from recfound.config import ConfigError, load_config
from recfound.run_folder import MARKER_FILE, RunFolder, RunFolderError, staging_folder


@pytest.fixture
def places(tmp_path, object_store, request):
    """The same folder on disk and in the bucket (a prefix of its own per test)."""
    prefix = f"{object_store}/storage-test/{request.node.name}"
    yield {"disk": str(tmp_path / "here"), "bucket": prefix}
    storage.delete(prefix)


@pytest.mark.parametrize("where", ["disk", "bucket"])
def test_files_and_folders_behave_the_same_on_disk_and_in_a_bucket(places, where, tmp_path):
    root = places[where]
    assert not storage.exists(root) and storage.list_names(root) == []
    storage.write_bytes(storage.join(root, "a", "b.bin"), b"\x00\x01" * 1000)
    storage.write_bytes(storage.join(root, "c.txt"), "é\n".encode())
    assert storage.is_dir(root) and storage.is_dir(storage.join(root, "a")) and not storage.is_file(root)
    assert storage.list_names(root) == ["a", "c.txt"]
    assert storage.file_sizes(root) == {"a/b.bin": 2000, "c.txt": 3}
    assert storage.read_text(storage.join(root, "c.txt")) == "é\n" and storage.size(storage.join(root, "a/b.bin")) == 2000
    copy = storage.download(root, tmp_path / f"copy-{where}")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == ["a/b.bin", "c.txt"]
    storage.upload(copy / "a", storage.join(root, "again"))
    assert storage.read_bytes(storage.join(root, "again", "b.bin")) == b"\x00\x01" * 1000
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        storage.read_bytes(storage.join(root, "missing.txt"))
    storage.delete(storage.join(root, "a"))
    assert storage.list_names(root) == ["again", "c.txt"]


def test_locations_are_named_plainly_and_other_schemes_refused():
    assert storage.normalize("s3://bucket//runs/") == "s3://bucket/runs"
    assert storage.join("s3://bucket/runs/", "r1", "/checkpoint_000002/") == "s3://bucket/runs/r1/checkpoint_000002"
    assert storage.basename("gs://bucket/runs/r1") == "r1" and storage.parent("s3://bucket/runs/r1") == "s3://bucket/runs"
    assert storage.parent("s3://bucket/x") == "s3://bucket" == storage.parent("s3://bucket")
    assert storage.scheme("gcs://bucket/x") == "gs" and storage.scheme("relative/path") is None
    with pytest.raises(ValueError, match=r"hdfs://nn/x: unsupported storage scheme 'hdfs'; use a local path, s3://"):
        storage.scheme("hdfs://nn/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        storage.normalize("s3://")


def test_a_run_folder_in_a_bucket_keeps_its_record_there_and_its_lock_here(object_store, tmp_path, monkeypatch):
    """The marker's record is mirrored into the bucket (a driver on another machine reads it); the lock is
    the staging folder's flock: a second process of the run is refused, naming the holder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RECFOUND_CACHE", raising=False)  # the cache under HOME
    output = f"{object_store}/storage-test/runs"
    with RunFolder(output, "r1") as folder:
        folder.note(mlflow_run_id="abc")
        record = json.loads(storage.read_text(f"{output}/r1/{MARKER_FILE}"))
        assert record["state"] == "running" and record["mlflow_run_id"] == "abc"
        assert folder.path == staging_folder(f"{output}/r1", "r1") and folder.path.is_relative_to(tmp_path)
        with pytest.raises(RunFolderError, match=rf"run 'r1' is in use by pid \d+ on host .*: {output}/r1 has one "
                                                 "writer at a time"):
            RunFolder(output, "r1").__enter__()
    storage.delete(staging_folder(f"{output}/r1", "r1").parent)  # another machine: nothing local
    with RunFolder(output, "r1") as again:
        assert again.last["mlflow_run_id"] == "abc" and again.last["state"] == "ended"
    storage.write_bytes(f"{output}/foreign/data.bin", b"x")
    with pytest.raises(RunFolderError, match=rf"{output}/foreign: exists and is not the folder of a run named "
                                             "'foreign'"):
        RunFolder(output, "foreign").__enter__()
    storage.delete(output)


def test_settings_that_cannot_live_in_a_bucket_are_refused_naming_the_key(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(None, ["run.output_dir=s3://acme/runs"])
    with pytest.raises(ConfigError, match=r"mlflow\.tracking_uri: run\.output_dir s3://acme/runs is on an object "
                                          "store, where no SQLite store can live"):
        config.tracking_uri()
    given = load_config(None, ["run.output_dir=s3://acme/runs", "mlflow.tracking_uri=http://mlflow:5000"])
    assert given.tracking_uri() == "http://mlflow:5000" and given.artifact_root() is None


def test_a_bucket_run_marked_running_by_another_machine_is_refused_and_overwrite_empties_the_bucket(
        object_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    output = f"{object_store}/storage-test/elsewhere"
    marker = f"{output}/r2/{MARKER_FILE}"
    storage.write_bytes(marker, json.dumps({"name": "r2", "host": "gpu-head-7", "pid": 41, "started": "then",
                                            "state": "running"}).encode())
    with pytest.raises(RunFolderError, match=rf"run 'r2' is marked running by pid 41 on host gpu-head-7 \(started "
                                             rf"then\), another machine, which this one cannot check; if that process "
                                             rf"is gone, delete {marker} \(its checkpoints stay\) and run again"):
        RunFolder(output, "r2").__enter__()
    storage.write_bytes(marker, json.dumps({"name": "r2", "host": "gpu-head-7", "state": "ended"}).encode())
    storage.write_bytes(f"{output}/r2/checkpoint_000002/adapter.safetensors", b"x")
    storage.write_bytes(f"{output}/r2/config.yaml", b"run: {name: r2}\n")
    with RunFolder(output, "r2") as folder:  # --overwrite: everything but the marker goes
        (folder.path / "tokenizer").mkdir()
        folder.empty()
        assert storage.list_names(f"{output}/r2") == [MARKER_FILE] and not (folder.path / "tokenizer").exists()
    storage.delete(output)


def test_a_missing_bucket_is_one_line_naming_it(object_store, capsys):
    from recfound.cli import main

    assert main(["data", "validate", "s3://rf-no-such-bucket/corpus"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("recfound: error: s3://rf-no-such-bucket: no such bucket; check the bucket name, the "
                            "credentials") and "\n" not in error


def test_a_bucket_run_gets_its_own_copy_of_a_named_tokenizer(object_store, tmp_path):
    """The workers of a run on a bucket may run on any node: the tokenizer they read is the run's copy."""
    from recfound.data.prepare import prepare_tokenizer
    from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
    from recfound.run_layout import RunLayout

    named = build_corpus_tokenizer(["a small corpus of words", "more words here"] * 20, tmp_path / "tok", vocab_size=300)
    layout = RunLayout(f"{object_store}/storage-test/tokenizer-run/r")
    config = load_config(None, [f"data.tokenizer={named}", "run.output_dir=s3://x/y",
                                "mlflow.tracking_uri=sqlite:///x.db"])
    local, location = prepare_tokenizer(config, "unused", layout, tmp_path / "staging")
    assert local == named.resolve() and location == layout.tokenizer
    assert storage.list_names(layout.tokenizer) == sorted(p.name for p in named.iterdir())
    assert load_tokenizer(location)[1].vocab_size == load_tokenizer(named)[1].vocab_size
    storage.delete(layout.location)


def test_a_bucket_run_gets_its_own_copy_of_the_pretrained_backbone(object_store, tmp_path, monkeypatch):
    """A preset pre-trained for a run on a bucket is uploaded into the run folder: its workers, on any node,
    and the run folder's model (run_serving) load it from there."""
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.prepare import prepare_backbone
    from recfound.data.synth import synthesize
    from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
    from recfound.eval.source import run_serving
    from recfound.model.backbone import load_backbone
    from recfound.run_layout import RunLayout

    monkeypatch.setenv("RECFOUND_CACHE", str(tmp_path / "cache"))
    synthesize(tmp_path / "data", 0, "tiny")
    tokenizer = build_corpus_tokenizer(corpus_texts(tmp_path / "data"), tmp_path / "tok", vocab_size=512)
    layout = RunLayout(f"{object_store}/storage-test/backbone-run/r")
    config = load_config(None, ["model.pretrain_steps=2", f"data.root={tmp_path / 'data'}", "run.output_dir=s3://x/y",
                                "mlflow.tracking_uri=sqlite:///x.db"])
    location = prepare_backbone(config, str(tmp_path / "data"), tokenizer, layout, tmp_path / "staging")
    assert location == layout.backbone and run_serving(layout, config).backbone == layout.backbone
    (cached,) = (tmp_path / "cache" / "backbones").iterdir()
    assert storage.list_names(location) == sorted(p.name for p in cached.iterdir())
    _, info = load_tokenizer(tokenizer)
    remote, local = load_backbone(location, info), load_backbone(cached, info)
    assert all(torch.equal(a, b) for a, b in zip(remote.model.parameters(), local.model.parameters()))
    storage.delete(layout.location)


def test_train_reads_its_config_file_from_a_bucket(object_store, capsys):
    from recfound.cli import main

    uri = f"{object_store}/configs/typo.yaml"
    storage.write_bytes(uri, b"train:\n  stepz: 3\n")
    assert main(["train", "--config", uri]) == 1  # refused while loading: nothing starts
    assert capsys.readouterr().err == f"recfound: error: {uri}: train.stepz: unknown key (did you mean train.steps?)\n"


@pytest.mark.parametrize("where", ["disk", "bucket"])
def test_a_file_written_over_a_folder_is_refused_and_the_folder_kept(places, where):
    root = places[where]
    storage.write_bytes(storage.join(root, "run", "checkpoint_000001", "adapter.safetensors"), b"x")
    with pytest.raises(IsADirectoryError, match="run: is a folder; give the name of a file"):
        storage.refuse_folder(storage.join(root, "run"))  # what a command checks of an output the user named
    if where == "disk":  # on disk every write checks (cheap); in a bucket it would cost two requests a write
        with pytest.raises(IsADirectoryError, match="run: is a folder; give the name of a file"):
            storage.write_bytes(storage.join(root, "run"), b"merged")
    storage.refuse_folder(storage.join(root, "run", "merged.safetensors"))  # a file's name passes
    assert storage.is_dir(storage.join(root, "run")) and storage.list_names(storage.join(root, "run")) == \
        ["checkpoint_000001"]


def test_a_whole_bucket_is_never_deleted_and_a_one_slash_uri_is_no_local_path(object_store):
    storage.write_bytes(f"{object_store}/guard/keep.txt", b"k")
    with pytest.raises(ValueError, match=f"{object_store}: refusing to delete a whole bucket; name a prefix inside it"):
        storage.delete(object_store)
    assert storage.read_bytes(f"{object_store}/guard/keep.txt") == b"k"
    storage.delete(f"{object_store}/guard")
    for text in ("s3:/bucket/runs", "S3:bucket/runs", "gs:/bucket/runs"):
        with pytest.raises(ValueError, match=r"a storage URI takes two slashes \((s3|S3|gs)://bucket/prefix\)"):
            storage.write_bytes(text, b"1")


def test_an_unreachable_endpoint_says_what_to_check(object_store, monkeypatch):
    from cloud_services import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(storage.StorageError) as caught:
        storage.list_names(f"{object_store}/runs")
    message = str(caught.value)
    assert message.startswith(f"{object_store}: cannot reach the object store (") and "\n" not in message
    assert message.endswith("; check the bucket name, the credentials (AWS_ACCESS_KEY_ID, "
                            "GOOGLE_APPLICATION_CREDENTIALS) and AWS_ENDPOINT_URL"), message
