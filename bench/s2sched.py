"""What does S2Sched cost per step? Incremental math at 100 vs 100k points, and the actor round trip
next to one tiny-model training step, all measured in this one run.

Run: make bench   (or: PYTHONPATH=platform python bench/s2sched.py)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from tiny_step import training_step_seconds  # noqa: E402

from recfound.cluster import ray_session  # noqa: E402
from recfound.data.corpus_text import corpus_texts  # noqa: E402
from recfound.data.pipeline import load_pools  # noqa: E402
from recfound.data.synth import synthesize  # noqa: E402
from recfound.data.tokenizer import build_corpus_tokenizer  # noqa: E402
from recfound.progress import format_table  # noqa: E402
from recfound.sched import IncrementalS2Sched, KindSpec, SchedConfig, ScheduleSpec, s2sched_ratios  # noqa: E402
from recfound.tasks import task_names  # noqa: E402

K, WINDOW, TAU = 13, 64, 10.0


def loss_history(points: int, seed: int = 0) -> np.ndarray:
    """Noisy decaying validation losses of K tasks with different speeds."""
    rng = np.random.default_rng(seed)
    s = np.arange(points)[:, None]
    return (rng.uniform(0.5, 2, K) + rng.uniform(0.5, 3, K) * np.exp(-s / rng.uniform(200, 20000, K))
            + 0.01 * rng.standard_normal((points, K)))


def incremental_costs(long_points: int, trials: int) -> tuple[float, float]:
    """Median seconds of one `add` after 100 points and after `long_points` points (alternated)."""
    history = loss_history(long_points + trials)
    short, long = IncrementalS2Sched(K, WINDOW, TAU), IncrementalS2Sched(K, WINDOW, TAU)
    for row in history[:100]:
        short.add(row)
    for row in history[:long_points]:
        long.add(row)
    costs: dict[str, list[float]] = {"short": [], "long": []}
    for i in range(trials):  # alternate so that machine load hits both alike
        for name, scheduler, row in (("short", short, history[100 + i]), ("long", long, history[long_points + i])):
            start = time.perf_counter()
            scheduler.add(row)
            costs[name].append(time.perf_counter() - start)
    return float(np.median(costs["short"])), float(np.median(costs["long"]))


def pure_cost(points: int, repeats: int = 5) -> float:
    """Median seconds of `s2sched_ratios` recomputing a `points`-long history from scratch."""
    history, times = loss_history(points), []
    for _ in range(repeats):
        start = time.perf_counter()
        s2sched_ratios(history, WINDOW, TAU)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def actor_round_trip(steps: int) -> float:
    """Median seconds of report + counts for one rank and all 13 tasks on a local actor."""
    from recfound.sched import start_scheduler

    kinds = {kind: KindSpec(task_names(kind), 64) for kind in ("embedding", "generative")}
    client = start_scheduler("bench", ScheduleSpec(kinds, steps + 10, config=SchedConfig(warmup_ratio=0, preset="paper")))
    rng, names, times = np.random.default_rng(0), task_names(), []
    for step in range(1, steps + 1):
        sums = {t: float(rng.uniform(100, 200)) for t in names}
        start = time.perf_counter()
        client.report(step, 0, sums, dict.fromkeys(names, 128))
        client.counts(step + 1)
        times.append(time.perf_counter() - start)
    return float(np.median(times[steps // 5:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long-points", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=300)
    args = parser.parse_args()

    short, long = incremental_costs(args.long_points, args.trials)
    pure_1k = pure_cost(1_000)
    with tempfile.TemporaryDirectory(prefix="rf-bench-") as tmp:
        data, tokenizer_dir = Path(tmp) / "data", str(Path(tmp) / "tokenizer")
        synthesize(data, 0, "tiny")
        build_corpus_tokenizer(corpus_texts(data), tokenizer_dir, vocab_size=2048)
        with ray_session():
            pools = {name: ref.fetch() for name, ref in load_pools(data, "train", tokenizer_dir).items()}
            round_trip = actor_round_trip(200)
        step, _ = training_step_seconds(pools, tokenizer_dir, 32, 32, steps=10)

    print(format_table(["measurement", "ms", "ratio"], [
        ["incremental add, after 100 points", short * 1e3, 1.0],
        [f"incremental add, after {args.long_points:,} points", long * 1e3, long / short],
        ["pure s2sched_ratios on 1,000 points (from scratch)", pure_1k * 1e3, pure_1k / short],
        ["actor report + counts (13 tasks, 1 rank)", round_trip * 1e3, round_trip / step],
        ["tiny model fwd+bwd (32 + 32 records)", step * 1e3, 1.0],
    ]))
    print(f"\nper-point cost at {args.long_points:,} vs 100 points: {long / short:.2f}x; "
          f"actor round trip = {100 * round_trip / step:.2f}% of a tiny-model step")


if __name__ == "__main__":
    main()
