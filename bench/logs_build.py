"""How long does `recfound data build` take, and how much memory does it need, as logs grow?

Run: PYTHONPATH=platform python bench/logs_build.py [--sizes 100000 1000000] [--seed 0]

For each size, writes a synthetic log in the ml-latest layout (ratings.csv + movies.csv: one user per 100
ratings on average, 20,000 movies or fewer, popularity and user activity skewed like MovieLens, half-star
ratings, timestamps with ties and repeats), then builds it with the default settings in a child process of
its own and reports the build's wall time, the child's CPU time (imports included; on a shared machine
the steadier number) and its peak RSS (`ru_maxrss`), next to the peak of a child that only imports the
builder (the floor every build pays).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.progress import format_table  # noqa: E402

GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def write_log(folder: Path, interactions: int, seed: int) -> None:
    """ratings.csv and movies.csv of `interactions` ratings (vectorised; about 2 s per million)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    users, movies = max(interactions // 100, 10), min(20_000, max(interactions // 20, 20))
    user_weight = rng.pareto(2.5, users) + 1
    movie_weight = 1 / np.arange(1, movies + 1) ** 0.8
    user = rng.choice(users, interactions, p=user_weight / user_weight.sum()) + 1
    movie = rng.choice(movies, interactions, p=movie_weight / movie_weight.sum()) + 1
    rating = rng.integers(1, 11, interactions) / 2
    timestamp = 1_000_000_000 + rng.integers(0, 200_000, interactions) * 60  # minute steps: ties happen
    folder.mkdir(parents=True)
    pcsv.write_csv(pa.table({"userId": user, "movieId": movie, "rating": rating, "timestamp": timestamp}),
                   folder / "ratings.csv")
    first = rng.integers(0, len(GENRES), movies)
    second = rng.integers(0, len(GENRES), movies)
    genres = [GENRES[a] if a == b else f"{GENRES[min(a, b)]}|{GENRES[max(a, b)]}" for a, b in zip(first, second)]
    titles = [f"Movie {m} ({1930 + m % 90})" for m in range(1, movies + 1)]
    pcsv.write_csv(pa.table({"movieId": np.arange(1, movies + 1), "title": titles, "genres": genres}),
                   folder / "movies.csv")


def child(data: str, out: str) -> None:
    """In a child process: build `data` into `out` (or only import, with data '-'); print the numbers."""
    from recfound.data.logs.build import build_logs
    from recfound.data.logs.settings import Settings

    result = {}
    if data != "-":
        start = time.perf_counter()
        report = build_logs("movielens", Path(data), Path(out), Settings())
        result = {"seconds": time.perf_counter() - start, "events": report.split.events, "users": report.split.users,
                  "items": report.split.items,
                  "records": sum(sum(split.values()) for split in report.records.values())}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(peak_mib=usage.ru_maxrss / 1024, cpu_seconds=usage.ru_utime + usage.ru_stime)
    print(json.dumps(result))


def measure(data: str, out: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", data, out], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="interactions per log")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    floor = measure("-", "-")["peak_mib"]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            start = time.perf_counter()
            write_log(Path(tmp) / f"log-{size}", size, args.seed)
            generated = time.perf_counter() - start
            result = measure(str(Path(tmp) / f"log-{size}"), str(Path(tmp) / f"out-{size}"))
            rows.append([f"{size:,}", f"{result['events']:,}", f"{result['users']:,}", f"{result['items']:,}",
                         f"{result['records']:,}", f"{generated:.1f}", f"{result['seconds']:.1f}",
                         f"{result['cpu_seconds']:.1f}", f"{result['peak_mib']:.0f}"])
    print(format_table(["interactions", "kept events", "users", "items", "records", "generate s", "build s",
                        "child CPU s", "peak RSS MiB"], rows))
    print(f"peak RSS of a child that only imports the builder: {floor:.0f} MiB")


if __name__ == "__main__":
    main()
