"""The split protocol on a random log (ties, repeats, short users), checked against a plain
re-computation, and leak-freedom of every record built from it; the samplers' guarantees."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recfound.data.logs.build import build_logs
from recfound.data.logs.movielens import read_movielens
from recfound.data.logs.sampling import Untouched, rows_of, task_rng
from recfound.data.logs.settings import Settings
from recfound.data.logs.split import TRAIN, split_source
from recfound.data.logs.textio import Notes
from test_logs_build import check_leak_free, counts, records


def random_log(folder: Path, seed: int, users: int = 40, movies: int = 30) -> None:
    """An ml-latest folder: up to 12 ratings per user on few distinct times (many ties), some repeats."""
    rng = random.Random(seed)
    folder.mkdir()
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m},Movie {m:03d} ({1950 + m}),{rng.choice(['Drama', 'Comedy', 'Drama|Comedy', 'Horror'])}\n"
        for m in range(1, movies + 1)))
    lines = []
    for user in range(1, users + 1):
        for _ in range(rng.randint(1, 12)):
            lines.append(f"{user},{rng.randint(1, movies)},{rng.randint(1, 10) / 2},{1000 + 100 * rng.randint(0, 6)}")
    rng.shuffle(lines)
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")


def expected_sequences(folder: Path, minimum: int = 3) -> dict[str, list[str]]:
    """By hand: order each user's lines by (time, line), keep an item's first line, keep users with `minimum`."""
    rows = [line.split(",") for line in (folder / "ratings.csv").read_text().splitlines()[1:]]
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for number, (user, movie, _, time) in enumerate(rows):
        by_user.setdefault(user, []).append((int(time), number, movie))
    sequences = {}
    for user, events in by_user.items():
        items: list[str] = []
        for _, _, movie in sorted(events):
            if movie not in items:
                items.append(movie)
        if len(items) >= minimum:
            sequences[user] = items
    return sequences


@pytest.mark.parametrize("seed", [0, 1])
def test_split_and_leak_freedom_on_a_random_log(tmp_path, seed):
    random_log(tmp_path / "log", seed)
    expected = expected_sequences(tmp_path / "log")
    out = tmp_path / "out"
    report = build_logs("movielens", tmp_path / "log", out, Settings(seed=seed, per_user=0, history=4, options=3))
    table = pq.read_table(out / "splits" / "interactions.parquet").to_pylist()
    found: dict[str, list[str]] = {}
    for row in table:
        found.setdefault(row["user"], []).append(row["item"])
    assert found == expected
    assert report.split.users == len(expected) and report.split.events == sum(map(len, expected.values()))
    assert check_leak_free(out, expected) > 300
    # per_user=0: one record per train event after the user's first (U2I needs no more than 3 untouched items)
    untouched = {user: 30 - len(items) for user, items in expected.items()}
    assert counts(out)["U2I"] == (sum(len(items) - 3 for user, items in expected.items() if untouched[user] >= 3),
                                  sum(1 for user in expected if untouched[user] >= 3),
                                  sum(1 for user in expected if untouched[user] >= 3))


def test_train_records_per_user_are_capped_and_inside_the_train_part(tmp_path):
    random_log(tmp_path / "log", 3)
    expected = expected_sequences(tmp_path / "log")
    build_logs("movielens", tmp_path / "log", tmp_path / "out", Settings(per_user=2))
    positions: dict[str, list[int]] = {}
    for record in records(tmp_path / "out")["train"]["RP"]:
        user, _, position = record["id"].partition("#")
        positions.setdefault(user, []).append(int(position))
    for user, items in expected.items():
        chosen = positions.get(user, [])
        assert len(chosen) == len(set(chosen)) == min(2, len(items) - 3)
        assert all(1 <= p <= len(items) - 3 for p in chosen)


def test_samplers(tmp_path):
    random_log(tmp_path / "log", 4, users=60, movies=12)  # small catalog: some users touch most of it
    seq, _ = split_source(read_movielens(tmp_path / "log", Notes()), 3)
    touched = {u: set(seq.item[seq.start[u]: seq.start[u] + seq.length[u]].tolist()) for u in range(seq.n_users)}
    users = np.repeat(np.arange(seq.n_users), 20)
    items, ok = Untouched(seq).sample(users, 4, task_rng(0, "test"))
    for user, row, good in zip(users, items, ok):
        assert good == (seq.n_items - len(touched[user]) >= 4)
        if good:
            assert len(set(row.tolist())) == 4 and not set(row.tolist()) & touched[user]
        else:
            assert (row == -1).all()
    rows = rows_of(seq, TRAIN, 1, task_rng(0, "rows"))
    assert (seq.split[rows] == TRAIN).all() and (seq.position[rows] >= 1).all()
    assert len(np.unique(seq.user[rows])) == len(rows)  # at most one per user
