"""Bad input to `recfound data build`: each case names file:line and the field (or says what the file is
instead), unknown columns are ignored with one warning, and a failed build writes nothing."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from recfound.cli import main
from recfound.data.logs.build import build_logs
from recfound.data.logs.settings import Settings
from recfound.data.reader import RecordError

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
REVIEW = {"rating": 5.0, "title": "Good", "text": "Works.", "asin": "B01X", "parent_asin": "B01", "user_id": "U1",
          "timestamp": 1000, "helpful_vote": 0, "verified_purchase": True}


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


def replace_line(path: Path, number: int, text: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = text
    path.write_bytes(b"\n".join(lines))


def build_error(source: str, path: Path, tmp_path: Path, meta: Path | None = None, **options) -> str:
    with pytest.raises((RecordError, ValueError, FileNotFoundError)) as caught:
        build_logs(source, path, tmp_path / "out", Settings(), meta, **options)
    assert not (tmp_path / "out").exists()
    return str(caught.value)


# --- delimited files (MovieLens) -------------------------------------------------------------


def test_bad_number_names_line_and_field(tmp_path):
    folder = copy("ml-100k", tmp_path)
    replace_line(folder / "u.data", 3, b"1\t1\tfive\t874965758")
    assert build_error("movielens", folder, tmp_path) == f"{folder / 'u.data'}:3: rating: expected a number, got 'five'"


def test_rating_out_of_range(tmp_path):
    folder = copy("ml-100k", tmp_path)
    replace_line(folder / "u.data", 2, b"1\t2\t7\t874965800")
    assert build_error("movielens", folder, tmp_path).endswith("u.data:2: rating: 7 is outside the range 0.5 to 5")


def test_short_line(tmp_path):
    folder = copy("ml-100k", tmp_path)
    replace_line(folder / "u.data", 5, b"1\t4\t4")
    assert build_error("movielens", folder, tmp_path).endswith(
        "u.data:5: timestamp: 3 fields separated by tabs where the file has 4")
    replace_line(folder / "u.data", 1, b"1\t1")
    assert build_error("movielens", folder, tmp_path).endswith(
        "u.data:1: rating: missing field: ML-100K u.data (user, item, rating, timestamp) has 4 fields separated by "
        "tabs, this line 2")


def test_latin1_item_file_forced_to_utf8(tmp_path):
    message = build_error("movielens", FIXTURES / "ml-100k", tmp_path, encoding="utf-8")
    # line 4 is "4|Misérables, ...": the é (0xe9 in latin-1) is the 6th byte, in the title field
    assert message == (f"{FIXTURES / 'ml-100k' / 'u.item'}:4: title: not valid utf-8 (byte 0xe9 at column 6); "
                       "ML-100K's u.item is latin-1: leave out --encoding to read it as latin-1")


def test_csv_in_another_encoding(tmp_path):
    folder = copy("ml-latest", tmp_path)
    text = (folder / "movies.csv").read_text(encoding="utf-8")
    (folder / "movies.csv").write_bytes(text.encode("latin-1"))
    assert build_error("movielens", folder, tmp_path) == (
        f"{folder / 'movies.csv'}:8: title: not valid utf-8 (byte 0xe9 at column 9); MovieLens CSV files are "
        "UTF-8; name the file's encoding with --encoding")
    report = build_logs("movielens", folder, tmp_path / "out", Settings(), encoding="latin-1")
    assert report.split.items == 9
    assert "Amélie (Fabuleux" in (tmp_path / "out" / "items.jsonl").read_text(encoding="utf-8")


def test_unknown_columns_are_ignored_with_one_warning(tmp_path):
    folder = copy("ml-latest", tmp_path)
    lines = (folder / "ratings.csv").read_text().splitlines()
    extended = [lines[0] + ",tag,source"] + [line + ",x,web" for line in lines[1:]]
    (folder / "ratings.csv").write_text("\n".join(extended) + "\n")
    report = build_logs("movielens", folder, tmp_path / "out", Settings())
    assert report.warnings == ["ratings.csv: ignoring unknown column(s) tag, source"]
    assert report.split.events == 13


def test_missing_column(tmp_path):
    folder = copy("ml-latest", tmp_path)
    lines = (folder / "ratings.csv").read_text().splitlines()
    (folder / "ratings.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    assert build_error("movielens", folder, tmp_path).endswith(
        "ratings.csv:1: timestamp: no such column in the header (userId, movieId, rating); ml-latest ratings.csv "
        "(userId,movieId,rating,timestamp) needs userId, movieId, rating, timestamp")


def test_a_header_with_excels_byte_order_mark_is_read(tmp_path):
    folder = copy("ml-latest", tmp_path)
    (folder / "ratings.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "ratings.csv").read_bytes())
    plain = build_logs("movielens", FIXTURES / "ml-latest", tmp_path / "plain", Settings())
    marked = build_logs("movielens", folder, tmp_path / "marked", Settings())
    assert marked.records == plain.records and sum(sum(c.values()) for c in marked.records.values()) > 0


@pytest.mark.parametrize("layout, name, line", [("ml-latest", "ratings.csv", b"   "), ("ml-100k", "u.data", b" \t")])
def test_a_line_of_blanks_is_named(tmp_path, layout, name, line):
    folder = copy(layout, tmp_path)
    replace_line(folder / name, 4, line)
    assert build_error("movielens", folder, tmp_path) == f"{folder / name}:4: <line>: a line of only spaces or tabs: delete it"


def test_missing_files(tmp_path):
    (tmp_path / "empty").mkdir()
    assert build_error("movielens", tmp_path / "empty", tmp_path).endswith(
        "empty: neither u.data (ML-100K) nor ratings.csv (ml-latest, ml-25m, ml-32m) found")
    folder = copy("ml-latest", tmp_path)
    (folder / "movies.csv").unlink()
    assert build_error("movielens", folder, tmp_path).endswith(
        "movies.csv: missing; ml-latest needs it beside the ratings")


# --- JSON lines (Amazon) ------------------------------------------------------------------------


def amazon_error(tmp_path: Path, reviews: bytes, meta: bytes | None = None, name: str = "reviews.jsonl") -> str:
    (tmp_path / name).write_bytes(reviews)
    meta_path = tmp_path / "meta.jsonl"
    meta_path.write_bytes(meta if meta is not None else (FIXTURES / "amazon-2023" / "meta.jsonl").read_bytes())
    return build_error("amazon", tmp_path / name, tmp_path, meta_path)


def lines(*objects: dict) -> bytes:
    return "".join(json.dumps(obj) + "\n" for obj in objects).encode()


def test_json_array_instead_of_lines(tmp_path):
    assert amazon_error(tmp_path, json.dumps([REVIEW, REVIEW], indent=2).encode()) == (
        f"{tmp_path / 'reviews.jsonl'}: <file>: one JSON array, not JSON lines (one object per line); convert it "
        "with: jq -c '.[]' FILE > FILE.jsonl")


def test_pretty_printed_objects(tmp_path):
    text = (json.dumps(REVIEW, indent=2) + "\n") * 2
    assert amazon_error(tmp_path, text.encode()).endswith(
        "reviews.jsonl:1: <line>: an object spread over several lines (pretty-printed JSON); write one object per "
        "line, e.g. jq -c . FILE > FILE.jsonl")


def test_concatenated_objects_on_one_line(tmp_path):
    assert amazon_error(tmp_path, (json.dumps(REVIEW) + json.dumps(REVIEW) + "\n").encode()).endswith(
        "reviews.jsonl:1: <line>: more than one JSON object on this line (concatenated objects); write one object "
        "per line, e.g. jq -c . FILE > FILE.jsonl")


def test_python_literals(tmp_path):
    assert amazon_error(tmp_path, (repr(REVIEW) + "\n").encode()).endswith(
        "reviews.jsonl:1: <line>: a Python dict literal, not JSON (as in the older Amazon dumps): convert each line "
        "with ast.literal_eval and json.dumps")


def test_broken_line_in_the_middle(tmp_path):
    text = lines(REVIEW, REVIEW) + b'{"rating": 4.0, "user_id": "U2",\n' + lines(REVIEW)
    assert amazon_error(tmp_path, text).startswith(
        f"{tmp_path / 'reviews.jsonl'}:3: <line>: invalid JSON: Expecting property name enclosed in double quotes")


def test_wrong_field_types(tmp_path):
    assert amazon_error(tmp_path, lines(REVIEW, {**REVIEW, "user_id": 7})).endswith(
        "reviews.jsonl:2: user_id: expected a string, got int 7")
    missing = {key: value for key, value in REVIEW.items() if key != "rating"}
    assert amazon_error(tmp_path, lines(REVIEW, REVIEW, missing)).endswith("reviews.jsonl:3: rating: missing field")
    assert amazon_error(tmp_path, lines({**REVIEW, "rating": 9})).endswith(
        "reviews.jsonl:1: rating: 9 is outside the range 0 to 5")
    assert amazon_error(tmp_path, lines({**REVIEW, "timestamp": "2020-01-01"})).endswith(
        "reviews.jsonl:1: timestamp: expected an integer, got str \"2020-01-01\"")
    meta = (FIXTURES / "amazon-2023" / "meta.jsonl").read_bytes().split(b"\n")
    broken = json.loads(meta[1])
    broken["categories"] = "Socks"
    meta[1] = json.dumps(broken).encode()
    assert amazon_error(tmp_path, lines(REVIEW), b"\n".join(meta)).endswith(
        "meta.jsonl:2: categories: expected a list, got str \"Socks\"")


def test_gzipped_file_names_the_line(tmp_path):
    with gzip.open(tmp_path / "reviews.jsonl.gz", "wb") as handle:
        handle.write(lines(REVIEW, REVIEW, {**REVIEW, "parent_asin": None}))
    meta = FIXTURES / "amazon-2023" / "meta.jsonl"
    assert build_error("amazon", tmp_path / "reviews.jsonl.gz", tmp_path, meta).endswith(
        "reviews.jsonl.gz:3: parent_asin: missing field")


def test_not_finite_numbers_are_named(tmp_path):
    # Python's json.dumps writes NaN and Infinity; json.loads and pyarrow read them back
    assert amazon_error(tmp_path, lines(REVIEW, REVIEW, {**REVIEW, "rating": float("nan")})).endswith(
        "reviews.jsonl:3: rating: nan is not a finite number")
    assert amazon_error(tmp_path, lines({**REVIEW, "rating": float("inf")})).endswith(
        "reviews.jsonl:1: rating: inf is not a finite number")


def test_damaged_and_misnamed_gzip_files(tmp_path):
    whole = gzip.compress(lines(*[REVIEW] * 50))
    assert amazon_error(tmp_path, whole[: len(whole) // 2], name="reviews.jsonl.gz") == (
        f"{tmp_path / 'reviews.jsonl.gz'}: <file>: a damaged or unfinished gzip file (Compressed file ended before "
        "the end-of-stream marker was reached): check it with gzip -t, and download or compress it again")
    assert amazon_error(tmp_path, lines(REVIEW), name="reviews.jsonl.gz") == (
        f"{tmp_path / 'reviews.jsonl.gz'}: <file>: named .gz but not gzip data: rename it without .gz")
    assert amazon_error(tmp_path, whole) == (
        f"{tmp_path / 'reviews.jsonl'}: <file>: gzip-compressed data in a file not named .gz: rename it "
        "reviews.jsonl.gz")
    meta = gzip.compress((FIXTURES / "amazon-2023" / "meta.jsonl").read_bytes())
    (tmp_path / "meta.jsonl.gz").write_bytes(meta[:-20])
    assert build_error("amazon", FIXTURES / "amazon-2023" / "reviews.jsonl.gz", tmp_path,
                       tmp_path / "meta.jsonl.gz").startswith(
        f"{tmp_path / 'meta.jsonl.gz'}: <file>: a damaged or unfinished gzip file")


def test_not_utf8_and_empty(tmp_path):
    assert amazon_error(tmp_path, lines(REVIEW) + b'{"title": "caf\xe9"}\n').endswith(
        "reviews.jsonl:2: <line>: not valid UTF-8 (byte 0xe9 at column 15); JSON files are UTF-8")
    assert amazon_error(tmp_path, b"\n\n").endswith("reviews.jsonl: <file>: empty file; expected one JSON object per line")


def test_neither_layout(tmp_path):
    assert amazon_error(tmp_path, b"\n \n" + lines({"who": "U1", "what": "B01"})).endswith(
        "reviews.jsonl:3: <record>: neither Amazon 2023 review fields (user_id, parent_asin, timestamp, rating) nor "
        "2018 ones (reviewerID, asin, unixReviewTime, overall)")


def test_unknown_fields_are_ignored_with_one_warning(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_bytes(lines(*({**REVIEW, "user_id": f"U{i}", "parent_asin": item, "timestamp": i * 10 + j,
                                 "mood": "fine", "weather": "rain"}
                                for i in range(3) for j, item in enumerate(("B01", "B02", "B03")))))
    meta = [json.loads(line) for line in (FIXTURES / "amazon-2023" / "meta.jsonl").read_text().splitlines()]
    (tmp_path / "meta.jsonl").write_bytes(lines(*({**m, "colour_code": 3} for m in meta)))
    report = build_logs("amazon", reviews, tmp_path / "out", Settings(), tmp_path / "meta.jsonl")
    assert report.warnings == [
        "reviews.jsonl: ignoring unknown field(s) mood, weather (seen in the first 9 lines)",
        "meta.jsonl: ignoring unknown field(s) colour_code (seen in the file)"]


def test_nothing_to_build_says_why(tmp_path):
    meta_2018 = lines({"asin": "Z9", "title": "Something else"})
    assert amazon_error(tmp_path, lines(*[REVIEW] * 3), meta_2018).endswith(
        "reviews.jsonl: none of its 3 events' items has metadata with a title; nothing to build: check that the "
        "metadata (or movie) file belongs to these events (e.g. Amazon 2023 reviews with 2023 metadata)")
    one_each = lines(*({**REVIEW, "user_id": f"U{i}"} for i in range(4)))
    assert amazon_error(tmp_path, one_each).endswith(
        "reviews.jsonl: no user has 3 distinct items with metadata (4 events read, 0 without metadata); nothing to "
        "build: add interactions")


def test_option_mistakes():
    with pytest.raises(ValueError, match="--source amazon needs --meta META.jsonl"):
        build_logs("amazon", FIXTURES / "amazon-2023" / "reviews.jsonl.gz", Path("unused"))
    with pytest.raises(ValueError, match="--meta is for --source amazon"):
        build_logs("movielens", FIXTURES / "ml-100k", Path("unused"), meta=FIXTURES / "amazon-2023" / "meta.jsonl")
    with pytest.raises(ValueError, match="--encoding is for MovieLens files"):
        build_logs("amazon", FIXTURES / "amazon-2023" / "reviews.jsonl.gz", Path("unused"),
                   meta=FIXTURES / "amazon-2023" / "meta.jsonl", encoding="latin-1")
    with pytest.raises(ValueError, match="--min-interactions must be at least 3, got 2"):
        Settings(min_interactions=2)
    with pytest.raises(ValueError, match="--options must be at most 20, got 21"):  # option letters A-T
        Settings(options=21)


# --- nothing half-written ------------------------------------------------------------------------


def test_failed_build_leaves_the_earlier_one_whole(tmp_path):
    out = tmp_path / "out"
    build_logs("movielens", FIXTURES / "ml-100k", out, Settings())
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    folder = copy("ml-latest", tmp_path)
    replace_line(folder / "ratings.csv", 9, b"2,50,5.0,soon")
    with pytest.raises(RecordError, match="ratings.csv:9: timestamp: expected an integer, got 'soon'"):
        build_logs("movielens", folder, out, Settings())
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-latest", "out"]  # no staging folder left


def test_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists and is not a folder written by this command"):
        build_logs("movielens", FIXTURES / "ml-100k", tmp_path / "notes", Settings())
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_cli_prints_one_line(tmp_path, capsys):
    folder = copy("ml-100k", tmp_path)
    replace_line(folder / "u.data", 3, b"1\t1\tfive\t874965758")
    assert main(["data", "build", str(folder), "--source", "movielens", "--out", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"recfound: error: {folder / 'u.data'}:3: rating: expected a number, got 'five'\n"


def test_an_output_folder_named_dot_is_built_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    def records() -> dict[Path, bytes]:  # build.json aside: it holds the build's seconds
        return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "build.json"}

    build_logs("movielens", FIXTURES / "ml-100k", Path("."), Settings())
    first = records()
    assert (out / "build.json").is_file() and (out / "train").is_dir()
    monkeypatch.chdir(tmp_path)  # the folder was replaced: a shell in it would cd again too
    monkeypatch.chdir(out)
    build_logs("movielens", FIXTURES / "ml-100k", Path("."), Settings())  # the earlier build is replaced whole
    assert records() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_build_stopped_by_sigterm_leaves_no_staging_folder(tmp_path):
    """`recfound data build` in a process of its own, sent SIGTERM while it writes: one line, status 143, and
    nothing beside the output folder (the earlier build there untouched)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = copy("ml-latest", tmp_path)
    movies = [line.split(",", 1)[0] for line in (folder / "movies.csv").read_text().splitlines()[1:]]
    # 200,000 ratings of the fixture's movies: seconds of work, so that the signal lands while it writes
    rows = ["userId,movieId,rating,timestamp"] + [f"{user},{movies[(user + k) % len(movies)]},4.0,{user * 1000 + k}"
                                                 for user in range(1, 20_001) for k in range(10)]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    build_logs("movielens", FIXTURES / "ml-100k", out, Settings())
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "recfound.cli", "data", "build", "--source", "movielens",
                                str(folder), "--out", str(out)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".out.") for p in tmp_path.iterdir()):  # its staging folder: it is writing
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no staging folder within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143 and err == "recfound: stopped by SIGTERM\n", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-latest", "out"]
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_an_item_id_on_two_lines_is_warned_about_and_its_first_line_used(tmp_path):
    folder = copy("ml-latest", tmp_path)
    with (folder / "movies.csv").open("a", encoding="utf-8") as movies:
        movies.write("1,Another Title (1999),Drama\n")
    report = build_logs("movielens", folder, tmp_path / "out", Settings())
    assert "ml-latest's movie file: 1 item line(s) repeat an earlier item's id (e.g. 1); the first line of each id " \
           "is used" in report.warnings
    items = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert "Another Title" not in json.dumps(items) and sum("Toy Story" in json.dumps(item) for item in items) == 1
