"""`recfound data build` on the hand-written fixtures (ML-100K, ml-latest, Amazon 2023 and 2018): counts
worked out by hand from the fixture files, every record through the validator, leak-freedom checked on
the output, tasks.yaml, items.jsonl and the split files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from recfound.cli import main
from recfound.data.logs.build import build_logs
from recfound.data.logs.settings import Settings
from recfound.data.reader import read_records
from recfound.task_file import read_task_file
from recfound.tasks import Task, get_task, task_names

FIXTURES = Path(__file__).parent / "fixtures" / "logs"
SPLITS = ("train", "val", "test")
SEQUENCE_TASKS = ("U2I", "SR", "MIM", "PREF", "WI", "RP")
OPTION_TASKS = ("SR", "MIM", "PREF")
USER_TASKS = (*SEQUENCE_TASKS, "SA", "UP", "UAP")  # record ids name a user (and a position); other ids name items

# Each kept user's items in split order (by time, equal times in file order, repeats dropped), by hand.
ML100K = {"1": ["1", "2", "3", "4", "5"], "2": ["1", "2", "6", "7"], "3": ["3", "5", "8", "1"]}
ML_LATEST = {"1": ["260", "1196", "1", "50", "4973"], "2": ["11", "32", "50", "260"],
             "3": ["5952", "171749", "1", "4973"]}
AMAZON_2023 = {"U1": ["B01", "B02", "B03", "B05", "B07"], "U2": ["B01", "B02", "B04", "B03"],
               "U3": ["B03", "B05", "B07", "B01"], "U6": ["B08", "B09", "B10", "B11"]}
AMAZON_2018 = {"A1": ["0001", "0002", "0003", "0004"], "A2": ["0001", "0002", "0003"],
               "A4": ["0005", "0006", "0007"]}

BUILDS = {
    "ml-100k": ("movielens", FIXTURES / "ml-100k", None, ML100K),
    "ml-latest": ("movielens", FIXTURES / "ml-latest", None, ML_LATEST),
    "amazon-2023": ("amazon", FIXTURES / "amazon-2023" / "reviews.jsonl.gz", FIXTURES / "amazon-2023" / "meta.jsonl",
                    AMAZON_2023),
    "amazon-2018": ("amazon", FIXTURES / "amazon-2018" / "reviews.jsonl", FIXTURES / "amazon-2018" / "meta.jsonl",
                    AMAZON_2018),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each fixture built once with the default settings: {name: (output folder, report)}."""
    results = {}
    for name, (source, path, meta, _) in BUILDS.items():
        out = tmp_path_factory.mktemp("logs") / name
        results[name] = out, build_logs(source, path, out, Settings(), meta)
    return results


# --- reading the output back ----------------------------------------------------------------


def declared_tasks(root: Path) -> dict[str, Task]:
    """The tasks of root/tasks.yaml, read and checked by the task-file reader (nothing registered)."""
    return {task.name: task for task in read_task_file(root / "tasks.yaml")}


def records(root: Path) -> dict[str, dict[str, list[dict]]]:
    """split -> task -> its records, each file read and checked by the project's validator (strict)."""
    extra = declared_tasks(root)
    result: dict[str, dict[str, list[dict]]] = {}
    for split in SPLITS:
        result[split] = {}
        for path in sorted((root / split).glob("*.jsonl")):
            task = extra.get(path.stem) or get_task(path.stem)
            result[split][path.stem] = read_records(path, task)
    return result


def counts(root: Path) -> dict[str, tuple[int, int, int]]:
    found = records(root)
    names = {name for split in SPLITS for name in found[split]}
    return {name: tuple(len(found[split].get(name, [])) for split in SPLITS) for name in names}


def built_counts(built, source: str, split: dict[str, int]) -> tuple:
    """(the build report of fixture `source`, its records per task and split), once its split report is `split`."""
    root, report = built[source]
    assert report.split.to_dict() == split
    return report, counts(root)


def title_of(card: str) -> str:
    for marker in (". Genres: ", ". Category: ", ". Brand: "):
        card = card.split(marker)[0]
    return card


def cards(root: Path) -> dict[str, str]:
    """item id -> card, from items.jsonl."""
    return {row["id"]: row["card"] for row in map(json.loads, (root / "items.jsonl").read_text().splitlines())}


def check_leak_free(root: Path, sequences: dict[str, list[str]]) -> int:
    """Every record about a user shows none of the user's items after its split's cutoff (train: the
    last two are hidden, validation: the last one), and every wrong option or negative is an item the
    user never touched. Returns the number of records checked."""
    by_card = {card: item for item, card in cards(root).items()}
    titles = {item: title_of(card) for item, card in cards(root).items()}
    checked = 0
    for split_index, split in enumerate(SPLITS):
        for task, rows in records(root)[split].items():
            for record in rows if task in USER_TASKS else ():
                user, _, position = record["id"].partition("#")
                items = sequences[user]
                cutoff = len(items) - (3 - split_index)
                if position:
                    assert int(position) <= cutoff, (split, record)
                    if task in SEQUENCE_TASKS and split != "train":
                        assert int(position) == cutoff, record
                text = "\n".join(str(record.get(key, "")) for key in ("input", "query", "positive", "output"))
                shown = text + "\n" + "\n".join(record.get("options", []) + record.get("negatives", []))
                for later in items[cutoff + 1:]:
                    assert titles[later] not in shown, (split, task, later, record)
                if task in SEQUENCE_TASKS:  # the history ends before the record's event (MIM: hides it)
                    history = record.get("query") or record["input"].split("\n\n")[0]
                    answer = by_card.get(_answer(task, record))
                    for shown_later in items[int(position) + (task == "MIM"):] + ([answer] if answer else []):
                        assert titles[shown_later] not in history, (split, task, shown_later, record)
                for wrong in _wrong_choices(task, record):
                    assert by_card[wrong] not in items, (task, wrong, record)
                checked += 1
    return checked


def _answer(task: str, record: dict) -> str | None:
    if task in OPTION_TASKS:
        return record["options"]["ABCDEFGHIJ".index(record["output"])]
    return record.get("positive")


def _wrong_choices(task: str, record: dict) -> list[str]:
    if task in OPTION_TASKS:
        answer = "ABCDEFGHIJ".index(record["output"])
        return [card for i, card in enumerate(record["options"]) if i != answer]
    if task == "U2I":
        return record["negatives"]
    if task == "WI" and record["output"] == "no":
        return [record["input"].split("\n\nCandidate: ")[1]]
    return []


# --- counts, worked out by hand from the fixture files ------------------------------------


def test_ml100k_counts(built):
    report, found = built_counts(built, "ml-100k", {
        "events_read": 19, "events_without_item": 1,  # item 99 is not in u.item
        "duplicate_events": 2,  # user 1's repeated line, user 2's second rating of item 1
        "users_dropped": 2, "events_of_dropped_users": 3,  # user 4 (1 item) and user 5 (2 items)
        "users": 3, "items": 8, "events": 13})
    # train records: users' train events after their first (1: 2, 2: 1, 3: 1); validation and test: one per user
    for task in ("U2I", "PREF", "WI", "RP"):
        assert found[task] == (4, 3, 3), task
    # 4 options need 4 untouched items: user 1 touched 5 of the 8 items, so their 4 records are left out
    assert found["SR"] == found["MIM"] == (2, 2, 2)
    assert report.skipped["SR"] == report.skipped["MIM"] == {"the user left too few items of the catalog untouched": 4}
    assert sum(found["UP"]) == 3 and sum(found["UAP"]) == 2  # user 3 has no u.user line
    assert sum(found["IP"]) == sum(found["Q2I"]) == 8  # every item has genres and a year
    assert sum(found["PRP"]) + sum(report.skipped["PRP"].values()) == 8
    # co-interaction: only items 1 and 2 were chosen together by two users (users 1 and 2, in train)
    i2i = [r["id"] for split in records(built["ml-100k"][0]).values() for r in split.get("I2I", [])]
    assert sorted(i2i) == ["1~2", "2~1"]
    assert set(found) == {*SEQUENCE_TASKS, "UP", "UAP", "IP", "Q2I", "I2I", "PRP"}
    assert set(report.unavailable) == {"QR", "AG", "AP", "PM", "SA", "AVE"}
    assert report.auxiliary == ["MIM", "PREF", "WI", "RP", "UAP"]


def test_ml_latest_counts(built):
    report, found = built_counts(built, "ml-latest", {
        "events_read": 15, "events_without_item": 0, "duplicate_events": 1, "users_dropped": 1,
        "events_of_dropped_users": 1, "users": 3, "items": 9, "events": 13})
    for task in SEQUENCE_TASKS:
        assert found[task] == (4, 3, 3), task
    assert sum(found["UP"]) == 3 and "UAP" not in found
    assert sum(found["IP"]) == 9  # Babylon 5 has no genres, but a train rating
    assert sum(found["Q2I"]) == 8  # ... and no year: no query
    assert "UAP" in report.unavailable and report.auxiliary == ["MIM", "PREF", "WI", "RP"]


def test_amazon_2023_counts(built):
    report, found = built_counts(built, "amazon-2023", {
        "events_read": 22, "events_without_item": 2,  # B99 has no metadata line, B06 no title
        "duplicate_events": 1, "users_dropped": 2, "events_of_dropped_users": 2,  # U4, U5
        "users": 4, "items": 10, "events": 17})
    for task in SEQUENCE_TASKS:
        assert found[task] == (5, 4, 4), task
    # SA: every train review (U1 3, U2 2, U3 2, U6 2); U2's validation review has neither title nor text
    assert found["SA"] == (9, 3, 4) and report.skipped["SA"] == {"the review has no text": 1}
    assert sum(found["AVE"]) == 9  # every item but B04 (no details, no store) states a detail in its listing
    assert sum(found["Q2I"]) == sum(found["IP"]) == 10
    assert set(report.unavailable) == {"QR", "AG", "AP", "PM", "UAP"}


def test_amazon_2018_counts(built):
    report, found = built_counts(built, "amazon-2018", {
        "events_read": 11, "events_without_item": 0, "duplicate_events": 0, "users_dropped": 1,
        "events_of_dropped_users": 1, "users": 3, "items": 7, "events": 10})
    for task in ("U2I", "PREF", "WI", "RP"):
        assert found[task] == (1, 3, 3), task  # only A1 has a train event after their first
    # A1 touched 4 of the 7 items: no 4 wrong options for their SR and MIM records
    assert found["SR"] == found["MIM"] == (0, 2, 2)
    assert found["SA"] == (4, 3, 3)


def test_every_record_passes_the_validator(built):
    for name, (root, report) in built.items():
        assert {task: c for task, c in counts(root).items()} == {
            task: tuple(report.records[s].get(task, 0) for s in SPLITS) for task in report.tasks}, name


def test_no_record_shows_the_future_or_a_touched_negative(built):
    for name, (root, _) in built.items():
        assert check_leak_free(root, BUILDS[name][3]) > 20, name


# --- what the records say ------------------------------------------------------------------


def test_split_file_holds_the_hand_worked_sequences(built):
    for name, (root, _) in built.items():
        table = pq.read_table(root / "splits" / "interactions.parquet").to_pylist()
        sequences: dict[str, list[str]] = {}
        for row in table:
            sequences.setdefault(row["user"], []).append(row["item"])
        assert sequences == BUILDS[name][3], name
        for user, items in sequences.items():
            splits = [row["split"] for row in table if row["user"] == user]
            assert splits == ["train"] * (len(items) - 2) + ["val", "test"]
    rows = pq.read_table(built["ml-100k"][0] / "splits" / "interactions.parquet").to_pylist()
    assert [r["rating"] for r in rows if r["user"] == "2"] == [4, 3, 5, 1]  # item 1's first rating counts


def test_titles_decode_and_cards(built):
    ml100k = cards(built["ml-100k"][0])
    assert ml100k["4"] == "Misérables, Les (1995). Genres: Drama, Musical, War"  # latin-1 in u.item
    assert ml100k["7"] == "Café au Lait (1994). Genres: Comedy"
    assert "u.item read as latin-1 (the encoding ML-100K ships it in)" in built["ml-100k"][1].notes
    latest = cards(built["ml-latest"][0])
    assert latest["11"] == "American President, The (1995). Genres: Comedy, Drama, Romance"
    assert latest["171749"] == "Babylon 5"
    assert latest["4973"].startswith("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)")
    amazon = cards(built["amazon-2023"][0])
    assert amazon["B04"] == "Headlamp 300 Lumen. Category: Sports & Outdoors"  # no store, no categories
    assert "B06" not in amazon  # no title
    assert cards(built["amazon-2018"][0])["0001"] == \
        "Salt & Stone: Poems. Category: Books > Literature & Fiction > Poetry. Brand: Harbor Press"


def test_rating_records(built):
    root, _ = built["ml-latest"]
    test = {r["id"]: r for r in records(root)["test"]["RP"]}
    # the held-out ratings 0.5, 2.5 and 4.5: half stars round up
    assert {key: r["output"] for key, r in test.items()} == {"1#4": "1", "2#3": "3", "3#3": "5"}
    assert test["1#4"]["input"] == ("1. Usual Suspects, The (1995) (rated 3.5)\n2. Toy Story (1995) (rated 4)\n"
                                    "3. Star Wars: Episode V - The Empire Strikes Back (1980) (rated 4.5)\n"
                                    "4. Star Wars: Episode IV - A New Hope (1977) (rated 5)\n\nItem to rate: "
                                    + cards(root)["4973"])


def test_item_profile_counts_train_ratings_only(built):
    root, _ = built["ml-100k"]
    profiles = {r["id"]: r["output"] for split in records(root).values() for r in split.get("IP", [])}
    # item 1: train ratings 5 (user 1) and 4 (user 2); user 3's 3 is a test event
    assert profiles["1"] == ("Toy Story (1995) is a 1995 movie in the genres Animation, Children's and Comedy. "
                             "In this log 2 users rated it, 4.5 out of 5 on average.")
    assert profiles["6"] == "Crumb (1994) is a 1994 movie in the genre Documentary."  # only a validation event


def test_user_profiles(built):
    up = {r["id"]: r for split in records(built["ml-100k"][0]).values() for r in split.get("UP", [])}
    # user 1 (train): Four Rooms 4, GoldenEye 3, Toy Story 5: four genres rated 4+ once each, first seen first
    assert up["1"]["input"] == "1. Four Rooms (1995) (rated 4)\n2. GoldenEye (1995) (rated 3)\n3. Toy Story (1995) (rated 5)"
    assert up["1"]["output"] == ("Likes Thriller, Animation and Children's. Favourite: Toy Story (1995) (5 stars). "
                                 "Mostly movies from the 1990s.")
    amazon = {r["id"]: r for split in records(built["amazon-2023"][0]).values() for r in split.get("UP", [])}
    # U1 (train): bottle 3, socks 4, black shoes 5: a path counts by its last node
    assert amazon["U1"]["output"] == "Likes Socks and Running. Favourite: Trail Runner 2 Running Shoes, Black (5 stars)."


def test_sentiment_and_attribute_records(built):
    root, _ = built["amazon-2023"]
    found = records(root)
    sa = {r["id"]: r for split in found.values() for r in split.get("SA", [])}
    assert sa["U1#0"]["input"] == ("Item: Trail Runner 2 Running Shoes, Black\nReview title: Great grip\n"
                                   "Review: Held on wet rocks. Very comfortable.")
    assert sa["U1#0"]["output"] == "A" and sa["U1#4"]["output"] == "D"  # 5 and 2 stars
    ave = {r["id"]: r for split in found.values() for r in split.get("AVE", [])}
    assert json.loads(ave["B01"]["output"]) == [
        {"attribute": "Color", "value": "Black", "source": "title"},
        {"attribute": "Color", "value": "Black", "source": "features"},
        {"attribute": "Material", "value": "Mesh", "source": "features"}]
    assert json.loads(ave["B02"]["output"]) == [{"attribute": "Material", "value": "Merino Wool", "source": "features"}]
    assert "Merino" not in ave["B02"]["input"].split("Target attributes:")[0].replace("Merino wool", "")


def test_relation_records_follow_their_definition(built):
    for name in ("ml-100k", "ml-latest", "amazon-2023", "amazon-2018"):
        root, _ = built[name]
        categories = {item: card.split(". Genres: " if name.startswith("ml") else ". Category: ")[1].split(". Brand")[0]
                      if (". Genres: " in card or ". Category: " in card) else "" for item, card in cards(root).items()}
        sets = {item: set(text.split(", ") if name.startswith("ml") else text.split(" > ")) for item, text in
                categories.items()}
        for split in records(root).values():
            for record in split.get("PRP", []):
                first, second = record["id"].split("~")
                if record["output"] == "B":
                    assert categories[first] == categories[second], record
                elif record["output"] == "C":
                    assert not sets[first] & sets[second], record


def test_targets_name_the_held_out_items(built):
    for name, (root, _) in built.items():
        targets = pq.read_table(root / "splits" / "targets.parquet").to_pylist()
        found = records(root)
        item_cards = cards(root)
        by_id = {(t["task"], t["split"], t["id"]): t for t in targets}
        for split in SPLITS:
            for record in found[split].get("U2I", []):
                target = by_id[("U2I", split, record["id"])]
                assert item_cards[target["item"]] == record["positive"]
            for record in found[split].get("SR", []):
                target = by_id[("SR", split, record["id"])]
                assert record["options"]["ABCDE".index(record["output"])] == item_cards[target["item"]]
                user, _, position = record["id"].partition("#")
                assert target["user"] == user and BUILDS[name][3][user][int(position)] == target["item"]


def test_tasks_file(built):
    root, _ = built["ml-100k"]
    document = yaml.safe_load((root / "tasks.yaml").read_text())
    assert document["version"] == 1
    assert [entry["name"] for entry in document["tasks"]] == ["MIM", "PREF", "WI", "RP", "UAP"]
    for entry in document["tasks"]:
        assert list(entry) == ["name", "kind", "description", "metric", "answer_type", "labels", "instructions"]
        assert entry["name"] not in task_names() and len(entry["instructions"]) >= 3
    by_name = {entry["name"]: entry for entry in document["tasks"]}
    assert (by_name["MIM"]["answer_type"], by_name["MIM"]["metric"]) == ("option_letter", "recall@1")
    assert (by_name["WI"]["answer_type"], by_name["WI"]["metric"]) == ("yes_no", "f1_yes")
    assert by_name["RP"]["labels"] == ["1", "2", "3", "4", "5"] and by_name["RP"]["answer_type"] == "label_set"
    assert by_name["UAP"]["labels"] == ["under 18", "18-24", "25-34", "35-44", "45-49", "50-55", "56 or older"]
    uap = {r["id"]: r["output"] for split in records(root).values() for r in split.get("UAP", [])}
    assert uap == {"1": "18-24", "2": "50-55"}  # ages 24 and 53 in u.user
    declared = declared_tasks(root)
    for split in records(root).values():
        for name, rows in split.items():
            if name in declared:
                assert {r["instruction"] for r in rows} <= set(declared[name].instructions)


def test_same_seed_same_files_other_seed_other_choices(built, tmp_path):
    source, path, meta, _ = BUILDS["ml-latest"]
    root, _ = built["ml-latest"]
    build_logs(source, path, tmp_path / "again", Settings(), meta)
    build_logs(source, path, tmp_path / "other", Settings(seed=1), meta)
    files = sorted(p.relative_to(root) for p in root.rglob("*.jsonl"))
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.jsonl"))
    assert all((root / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    assert any(not (tmp_path / "other" / f).exists() or (root / f).read_bytes() != (tmp_path / "other" / f).read_bytes()
               for f in files)


def test_cli_builds_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["data", "build", str(FIXTURES / "ml-100k"), "--source", "movielens", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read 19 events (ml-100k)" in printed and "not built: SA: MovieLens has ratings but no review texts" in printed
    assert (out / "build.json").is_file() and (out / "tasks.yaml").is_file()
    # built again into the same folder: replaced whole
    assert main(["data", "build", str(FIXTURES / "ml-latest"), "--source", "movielens", "--out", str(out)]) == 0
    assert json.loads((out / "build.json").read_text())["layout"] == "ml-latest"
    assert not (out / "train" / "UAP.jsonl").exists()
