"""The authors' released format: read directly, and converted by `recfound data convert`."""

from __future__ import annotations

import json

import pytest

from recfound.cli import main
from recfound.data.reader import RecordError, read_records
from recfound.data.validate import convert_released

# Hand-written rows in the released layout (texts are strings or [instruction, text] pairs).
EMB_PAIRS = {"query": ["Represent this query for finding a product:", "waterproof hiking boots"],
             "pos": [["", "TrailMax waterproof leather hiking boot"], "Summit Gore-Tex boot"],
             "neg": [["", "TrailMax sandals"], "Beach flip flops"], "task": "Q2I"}
EMB_STRINGS = {"query": "Alpha pen; Beta notebook; Gamma ink", "pos": ["Gamma ink refill"], "task": "user2item"}
GEN_ONE_TURN = {"text": ["Is this review positive? Reply yes or no.\nLovely product.", "yes"], "task": "AP"}
GEN_TWO_TURNS = {"text": ["Hi, I need help.", "Sure, what is it?",
                          "Do these listings match? A: X1 phone / B: X1 phone black", "yes"], "task": "PM"}


def jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_embedding_rows_make_one_record_per_positive(tmp_path):
    path = jsonl(tmp_path / "Q2I.jsonl", [EMB_PAIRS])
    records = read_records(path, "Q2I")
    assert [r["positive"] for r in records] == ["TrailMax waterproof leather hiking boot", "Summit Gore-Tex boot"]
    for r in records:
        assert r["instruction"] == "Represent this query for finding a product:"
        assert r["query"] == "waterproof hiking boots"
        assert r["negatives"] == ["TrailMax sandals", "Beach flip flops"]


def test_plain_string_query_gets_the_tasks_first_wording(tmp_path):
    from recfound.tasks import get_task

    (record,) = read_records(jsonl(tmp_path / "U2I.jsonl", [EMB_STRINGS]), "U2I")
    assert record["instruction"] == get_task("U2I").instructions[0]
    assert record["query"] == "Alpha pen; Beta notebook; Gamma ink" and record["negatives"] == []


def test_generative_rows(tmp_path):
    (one,) = read_records(jsonl(tmp_path / "AP.jsonl", [GEN_ONE_TURN]), "AP")
    assert one["instruction"].startswith("Is this review positive?") and one["input"] == "" and one["output"] == "yes"
    (two,) = read_records(jsonl(tmp_path / "PM.jsonl", [GEN_TWO_TURNS]), "PM")
    assert two["input"] == "User: Hi, I need help.\nAssistant: Sure, what is it?"
    assert two["instruction"].startswith("Do these listings match?") and two["output"] == "yes"


@pytest.mark.parametrize("row,field", [
    ({"text": ["only the user"], "task": "AP"}, "text"),
    ({"query": "q", "pos": [], "task": "Q2I"}, "pos"),
    ({"query": ["a", "b", "c"], "pos": ["p"], "task": "Q2I"}, "query"),
    ({"query": "q", "pos": ["p"], "neg": "n", "task": "Q2I"}, "neg"),
    ({"text": ["Q", "maybe"], "task": "AP"}, "output"),  # converted, then fails AP's yes/no check
])
def test_bad_released_rows_name_the_field(tmp_path, row, field):
    task = row["task"]
    path = jsonl(tmp_path / f"{task}.jsonl", [GEN_ONE_TURN if task == "AP" else EMB_STRINGS | {"task": "Q2I"}, row])
    with pytest.raises(RecordError) as info:
        read_records(path, task)
    assert (info.value.line, info.value.field) == (2, field)


def test_convert_splits_mixed_files_by_task(tmp_path):
    source = jsonl(tmp_path / "released.jsonl", [EMB_PAIRS, GEN_ONE_TURN, EMB_STRINGS, GEN_TWO_TURNS])
    counts = convert_released([source], tmp_path / "ours", "train")
    assert counts == {"Q2I": 2, "AP": 1, "U2I": 1, "PM": 1}
    for name, count in counts.items():
        lines = (tmp_path / "ours" / "train" / f"{name}.jsonl").read_text().splitlines()
        assert len(lines) == count
        assert len(read_records(tmp_path / "ours" / "train" / f"{name}.jsonl", name)) == count


def test_strict_convert_writes_nothing_on_error(tmp_path):
    source = jsonl(tmp_path / "released.jsonl", [EMB_PAIRS, {"text": ["x", "y"], "task": "NOPE"}])
    assert main(["data", "convert", str(source), "--out", str(tmp_path / "ours"), "--split", "train"]) == 1
    assert not (tmp_path / "ours").exists()


def test_convert_cli_skip_policy(tmp_path, capsys):
    source = jsonl(tmp_path / "released.jsonl", [EMB_PAIRS, {"text": ["x", "y"], "task": "NOPE"}, GEN_ONE_TURN])
    assert main(["data", "convert", str(source), "--out", str(tmp_path / "ours"), "--split", "val",
                 "--policy", "skip"]) == 0
    out = capsys.readouterr().out
    assert "Q2I: 2 records" in out and "AP: 1 records" in out
    assert "skipped 1 bad record(s)" in out and "released.jsonl:2: task: unknown task 'NOPE'" in out


SR_ROW = {"text": ["From this history pick the next item.\nAcme pen\nOptions:\n(A) Acme ink\n(B) Zeta sofa\n(C) Kilo lamp",
                   '"A"'], "task": "SR"}
SA_ROW = {"text": ["Classify the review.\nLove it!\nA: very positive\nB: positive\nC: neutral\nD: negative\n"
                   "E: very negative\nAnswer with a letter.", "A: very positive"], "task": "sentiment_analysis"}
PRP_ROW = {"text": ["How are they related?\nProduct 1: pen\nProduct 2: ink\nA. bought together\nB. viewed together\n"
                    "C. similar", "B"], "task": "PRP"}


def test_option_tasks_get_their_options_from_the_prompt(tmp_path):
    source = jsonl(tmp_path / "released.jsonl", [SR_ROW, SA_ROW, PRP_ROW])
    convert_released([source], tmp_path / "ours", "train")
    (sr,) = read_records(tmp_path / "ours" / "train" / "SR.jsonl", "SR")
    assert sr["options"] == ["Acme ink", "Zeta sofa", "Kilo lamp"] and sr["output"] == "A"
    assert sr["instruction"] == "From this history pick the next item.\nAcme pen"
    (sa,) = read_records(tmp_path / "ours" / "train" / "SA.jsonl", "SA")
    assert len(sa["options"]) == 5 and sa["output"] == "A: very positive"
    assert sa["instruction"] == "Classify the review.\nLove it!\nAnswer with a letter."
    (prp,) = read_records(tmp_path / "ours" / "train" / "PRP.jsonl", "PRP")
    assert prp["options"] == ["bought together", "viewed together", "similar"] and prp["output"] == "B"


@pytest.mark.timeout(60)  # a whitespace run of 600 KB: linear parsing takes milliseconds, quadratic took hours
def test_option_parsing_is_linear_in_the_line_length():
    from recfound.data.released import split_options

    padding = " " * 600_000
    prompt = f"Pick one.\n  Options:{padding}\nA) red{padding}shoes{padding}\nB) blue\n{padding}x"
    assert split_options(prompt) == (f"Pick one.\n{padding}x", [f"red{padding}shoes", "blue"])


def test_a_released_row_of_another_task_is_refused(tmp_path):
    path = jsonl(tmp_path / "PM.jsonl", [GEN_TWO_TURNS, GEN_ONE_TURN])  # the second row says AP
    with pytest.raises(RecordError, match=r"PM.jsonl:2: task: row says task 'AP' but the file holds PM"):
        read_records(path, "PM")


def test_released_rows_in_parquet_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "AP.parquet"
    pq.write_table(pa.Table.from_pylist([GEN_ONE_TURN, {"text": ["only the user"], "task": "AP"}]), path)
    with pytest.raises(RecordError) as info:
        read_records(path, "AP")
    assert str(info.value).startswith(f"{path}:row 2: text: ")


def test_convert_reports_every_kind_of_damage_with_file_and_line(tmp_path):
    source = tmp_path / "released.jsonl"
    line_separator_inside_a_string = {**GEN_ONE_TURN, "text": ["Is it good?\u2028Reply yes or no.", "yes"]}
    source.write_bytes(b"\n".join([json.dumps(line_separator_inside_a_string).encode(), b'{"text": "\xff"}',
                                   b"[1, 2]", json.dumps({"text": ["q"], "task": "PM"}).encode(),
                                   json.dumps(GEN_ONE_TURN).encode()]) + b"\n")
    with pytest.raises(RecordError, match=r"released.jsonl:2: <line>: invalid UTF-8"):
        convert_released([source], tmp_path / "ours", "train")
    from recfound.data.reader import SkipReport

    report = SkipReport()
    assert convert_released([source], tmp_path / "ours", "train", "skip", report) == {"AP": 2}
    assert report.skipped == {"<unknown>": 2, "PM": 1}
    assert [r.split(": ")[0] for r in report.reasons] == [f"{source}:2", f"{source}:3", f"{source}:4"]


def test_convert_refuses_an_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        convert_released([jsonl(tmp_path / "r.jsonl", [GEN_ONE_TURN])], tmp_path / "ours", "training")
