"""Record validation: every kind of damage is reported with file, line and field (strict) or counted (skip)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recfound.data.reader import RecordError, SkipReport, read_records, task_files
from recfound.tasks import get_task

GOOD_SA = {"instruction": "How does the reviewer feel?", "input": "Great shoes, love them.",
           "options": ["very positive", "positive", "neutral", "negative", "very negative"], "output": "A"}
GOOD_Q2I = {"instruction": "Embed this query.", "query": "red running shoes", "positive": "Acme red runner",
            "negatives": ["Acme blue boot"]}


def write_lines(path: Path, lines: list[str | bytes], final_newline: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
    path.write_bytes(raw + (b"\n" if final_newline else b""))
    return path


def damaged(record: dict, **changes) -> str:
    out = {**record, **changes}
    return json.dumps({k: v for k, v in out.items() if v is not ...})


# (name, bad line, field the error must name, words the message must contain)
DAMAGE = [
    ("missing field", damaged(GOOD_SA, output=...), "output", "missing field"),
    ("wrong type", damaged(GOOD_SA, input=42), "input", "expected a string"),
    ("empty text", damaged(GOOD_SA, instruction="  "), "instruction", "empty text"),
    ("answer not among options", damaged(GOOD_SA, output="F"), "output", "not among the options"),
    ("options not a list", damaged(GOOD_SA, options="A,B"), "options", "list of strings"),
    ("record of another task", damaged(GOOD_SA, task="PM"), "task", "file holds SA"),
    ("unknown field", damaged(GOOD_SA, answer="A"), "answer", "unknown field"),
    ("a field of the other kind", damaged(GOOD_SA, negatives=["a look-alike"]), "negatives",
     "unknown field for a generative record (allowed: id, input, instruction, options, output, task)"),
    ("invalid JSON", '{"instruction": "x",, }', "<line>", "invalid JSON"),
    ("not an object", "[1, 2]", "<record>", "JSON object"),
    ("invalid UTF-8", b'{"instruction": "caf\xe9"}', "<line>", "invalid UTF-8"),
    ("nested too deeply", '{"instruction": ' + "[" * 200_000 + "]" * 200_000 + "}", "<line>", "nested too deeply"),
    ("record too large", damaged(GOOD_SA, input="x" * (1 << 20)), "<line>", "the limit is 1,048,576"),
]


@pytest.mark.parametrize("name,bad,field,words", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_strict_names_file_line_and_field(tmp_path, name, bad, field, words):
    good = json.dumps(GOOD_SA)
    path = write_lines(tmp_path / "train" / "SA.jsonl", [good, good, bad, good])
    with pytest.raises(RecordError) as info:
        read_records(path, "SA", "strict")
    err = info.value
    assert (err.path, err.line, err.field) == (str(path), 3, field)
    assert words in err.reason
    assert str(err).startswith(f"{path}:3: {field}: ")


def test_a_null_field_of_the_other_kind_is_no_field(tmp_path):
    """JSONL written from a frame holding both kinds' columns carries the other kind's fields as null."""
    path = write_lines(tmp_path / "train" / "Q2I.jsonl", [json.dumps({**GOOD_Q2I, "options": None})])
    assert read_records(path, "Q2I", "strict")[0]["query"] == GOOD_Q2I["query"]


def test_an_embedding_record_with_options_is_refused_naming_them(tmp_path):
    path = write_lines(tmp_path / "train" / "Q2I.jsonl", [json.dumps({**GOOD_Q2I, "options": ["a", "b"]})])
    with pytest.raises(RecordError, match=r"Q2I.jsonl:1: options: unknown field for an embedding record \(allowed: "
                                          r"id, instruction, negatives, positive, query, task\)"):
        read_records(path, "Q2I", "strict")


@pytest.mark.parametrize("name,bad,field,words", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_skip_counts_and_keeps_the_good_records(tmp_path, name, bad, field, words):
    good = json.dumps(GOOD_SA)
    path = write_lines(tmp_path / "train" / "SA.jsonl", [good, bad, good, bad])
    report = SkipReport()
    records = read_records(path, "SA", "skip", report)
    assert len(records) == 2
    assert report.skipped == {"SA": 2}
    assert report.reasons[0].startswith(f"{path}:2: {field}: ")


def test_truncated_last_line(tmp_path):
    good = json.dumps(GOOD_SA)
    path = write_lines(tmp_path / "SA.jsonl", [good, good[: len(good) // 2]], final_newline=False)
    with pytest.raises(RecordError, match=r"SA.jsonl:2: <line>: truncated last line"):
        read_records(path, "SA")


def test_complete_last_line_without_newline_is_fine(tmp_path):
    path = write_lines(tmp_path / "SA.jsonl", [json.dumps(GOOD_SA)] * 2, final_newline=False)
    assert len(read_records(path, "SA")) == 2


def test_normalized_records_have_every_field(tmp_path):
    path = write_lines(tmp_path / "Q2I.jsonl", [json.dumps({k: v for k, v in GOOD_Q2I.items() if k != "negatives"})])
    (record,) = read_records(path, "Q2I")
    assert record == {"task": "Q2I", "id": "", "instruction": "Embed this query.", "query": "red running shoes",
                      "positive": "Acme red runner", "negatives": []}


@pytest.mark.parametrize("task,record,problem", [
    ("PM", {"instruction": "Same product?", "input": "a / b", "output": "maybe"}, "expected 'yes' or 'no'"),
    ("AVE", {"instruction": "Extract.", "input": "t", "output": "not json"}, "JSON list"),
    ("AVE", {"instruction": "Extract.", "input": "t", "output": '[{"attribute": "color"}]'}, "exactly the keys"),
    ("SR", {"instruction": "Pick.", "input": "history", "output": "A"}, "options are required"),
    ("Q2I", {"instruction": "Embed.", "query": "q", "positive": "p", "negatives": ["ok", ""]}, "empty text"),
])
def test_answer_checks_per_task_type(tmp_path, task, record, problem):
    path = write_lines(tmp_path / f"{task}.jsonl", [json.dumps(record)])
    with pytest.raises(RecordError, match=problem):
        read_records(path, task)


def test_option_answer_may_repeat_the_option_text(tmp_path):
    path = write_lines(tmp_path / "SA.jsonl", [damaged(GOOD_SA, output="B: positive"),
                                               damaged(GOOD_SA, output="B: neutral")])
    with pytest.raises(RecordError, match=r":2: output: .*not among the options"):
        read_records(path, "SA")


def test_parquet_with_the_same_columns(tmp_path):
    rows = [GOOD_SA, {**GOOD_SA, "output": "Z"}]
    path = tmp_path / "train" / "SA.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError) as info:
        read_records(path, "SA")
    assert (info.value.line, info.value.field) == ("row 2", "output")
    report = SkipReport()
    assert len(read_records(path, "SA", "skip", report)) == 1 and report.total == 1


def test_a_parquet_row_past_the_size_limit_is_refused_naming_it(tmp_path):
    """As one JSONL line is capped: one row whose texts (a nested list counts too) pass 1 MiB."""
    path = tmp_path / "train" / "SA.parquet"
    path.parent.mkdir(parents=True)
    long_option = "x" * (1 << 19)
    big = {**GOOD_SA, "options": [long_option, long_option, "A"]}
    pq.write_table(pa.Table.from_pylist([GOOD_SA, big, GOOD_SA]), path)
    with pytest.raises(RecordError) as info:
        read_records(path, "SA")
    texts = [big["instruction"], big["input"], *big["options"], big["output"]]
    assert (info.value.line, info.value.field) == ("row 2", "<row>")
    assert info.value.reason.startswith(f"a record of {sum(len(t.encode()) for t in texts):,} bytes of text; "
                                        "the limit is 1,048,576")
    report = SkipReport()
    assert len(read_records(path, "SA", "skip", report)) == 2 and report.total == 1


def test_damaged_parquet_file(tmp_path):
    path = tmp_path / "SA.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RecordError, match="unreadable Parquet"):
        read_records(path, "SA")


def test_task_files_reject_unknown_task_names(tmp_path):
    write_lines(tmp_path / "train" / "SA.jsonl", [json.dumps(GOOD_SA)])
    write_lines(tmp_path / "train" / "XYZ.jsonl", [json.dumps(GOOD_SA)])
    with pytest.raises(RecordError, match=r"XYZ.jsonl: <file>: .*unknown task 'XYZ'"):
        task_files(tmp_path, "train")


def test_missing_split_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such split folder"):
        task_files(tmp_path, "val")


def test_a_new_task_is_one_registry_entry_plus_files(tmp_path, extra_task):
    write_lines(tmp_path / "train" / "CTR.jsonl", [json.dumps({"instruction": "Will the user click?",
                                                                "input": "user likes shoes; ad: shoes",
                                                                "output": "click"})])
    files = task_files(tmp_path, "train")
    assert list(files) == ["CTR"]
    assert read_records(files["CTR"], "CTR")[0]["output"] == "click"
    bad = write_lines(tmp_path / "x" / "CTR.jsonl", [json.dumps({"instruction": "i", "input": "", "output": "meh"})])
    with pytest.raises(RecordError, match="not one of the labels"):
        read_records(bad, get_task("CTR"))


def test_records_task_files_and_validate_read_from_a_bucket(tmp_path, monkeypatch, capsys):
    from cloud_services import s3_server
    from recfound import storage
    from recfound.cli import main

    bad_sa = damaged(GOOD_SA, output="F")
    write_lines(tmp_path / "data" / "train" / "SA.jsonl", [json.dumps(GOOD_SA), bad_sa, json.dumps(GOOD_SA)])
    pq.write_table(pa.Table.from_pylist([GOOD_Q2I]), tmp_path / "data" / "train" / "Q2I.parquet")
    with s3_server("rf-reader") as environment:
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        storage.upload(tmp_path / "data", "s3://rf-reader/corpus")
        files = task_files("s3://rf-reader/corpus", "train")
        assert files == {"Q2I": "s3://rf-reader/corpus/train/Q2I.parquet", "SA": "s3://rf-reader/corpus/train/SA.jsonl"}
        assert read_records(files["Q2I"], "Q2I") == read_records(tmp_path / "data" / "train" / "Q2I.parquet", "Q2I")
        with pytest.raises(RecordError) as info:
            read_records(files["SA"], "SA")
        assert str(info.value).startswith("s3://rf-reader/corpus/train/SA.jsonl:2: output: ")
        assert main(["data", "validate", "s3://rf-reader/corpus", "--splits", "train", "--policy", "skip"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 bad record(s)" in out and "s3://rf-reader/corpus/train/SA.jsonl:2: output:" in out
