"""How far can U2I go on the synthetic corpus? Plain rules scored as the evaluation scores a model.

Each U2I test record's candidates are the evaluation's sampled ones (its positive and 19 negatives of
the positive's top category, `CandidatePool.sampled_candidates` with the same seed), and a rule scores a
candidate item line ("Brand ... | Top > Sub > Leaf") by counting the history's items that share its sub
category, its brand, or both counts added. A rule's scores tie often, a model's almost never, so MRR@k is
taken as the expected reciprocal rank when ties are ordered at random (the evaluation itself counts ties
against the target). docs/training.md compares these with the base and the trained model. Example:

    python bench/u2i_rules.py --data .cache/demo/data

Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.eval.data import CandidatePool, load_split  # noqa: E402

Item = tuple[str, str]  # (brand, sub category)
Rule = Callable[[list[Item], Item], int]
RULES: dict[str, Rule] = {
    "sub category": lambda history, item: sum(seen[1] == item[1] for seen in history),
    "brand": lambda history, item: sum(seen[0] == item[0] for seen in history),
    "both counts added": lambda history, item: sum((seen[1] == item[1]) + (seen[0] == item[0]) for seen in history),
}


def item_of(line: str) -> Item:
    """(brand, sub category) of an item line: the title's first word and the path's second part."""
    title, _, path = line.partition(" | ")
    parts = [part.strip() for part in path.split(">")]
    if not title or len(parts) < 2:
        raise ValueError(f"not an item line 'Brand ... | Top > Sub > Leaf': {line!r}")
    return title.split()[0], parts[1]


def expected_reciprocal_rank(target: float, others: list[float], k: int) -> float:
    """E[1/rank if rank <= k else 0] of `target` among `others` when tied scores are ordered at random."""
    above = sum(score > target for score in others)
    ties = sum(score == target for score in others)
    return sum(1 / rank for rank in range(above + 1, above + ties + 2) if rank <= k) / (ties + 1)


def rule_mrr(records: list[dict], rule: Rule, negatives: int, seed: int, k: int) -> float:
    pool = CandidatePool.of("U2I", records)
    rows, _ = pool.sampled_candidates(negatives, seed)
    total = 0.0
    for record, row in zip(records, rows):
        history = [item_of(line) for line in record["query"].split("\n")]
        scores = [rule(history, item_of(pool.documents[index])) for index in row]
        total += expected_reciprocal_rank(scores[0], scores[1:], k)
    return total / len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder holding test/U2I.jsonl (or another split)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--negatives", type=int, default=19, help="sampled negatives per query (eval default)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the run's seed, which generated --data's corpus and draws the evaluation's negatives")
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args(argv)
    if args.negatives < 1 or args.k < 1:
        parser.error("--negatives and --k must be >= 1")
    try:
        records = load_split(args.data, args.split, ["U2I"]).get("U2I")
        if not records:
            raise ValueError(f"{args.data}: no U2I records in its {args.split} split")
        scores = {name: rule_mrr(records, rule, args.negatives, args.seed, args.k) for name, rule in RULES.items()}
    except (OSError, ValueError) as err:
        print(f"u2i_rules: error: {err}", file=sys.stderr)
        return 2
    print(f"U2I mrr@{args.k} of plain rules ({len(records)} {args.split} records, {args.negatives} sampled negatives)")
    for name, score in scores.items():
        print(f"{name:>22}  {score:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
