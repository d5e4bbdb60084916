"""bench/u2i_rules.py: the plain U2I rules behind docs/training.md's headroom figures rank with ties ordered
at random (hand-worked), read item lines, run on the synthetic corpus and refuse bad input with one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from recfound.data.synth import synthesize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import u2i_rules  # noqa: E402


def test_ties_are_ordered_at_random_and_ranks_past_k_count_zero():
    # one candidate above, two tied: rank 2, 3 or 4 with equal chance
    assert u2i_rules.expected_reciprocal_rank(2, [3, 2, 2, 1], k=20) == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert u2i_rules.expected_reciprocal_rank(5, [3, 2], k=20) == 1.0
    # 19 above and one tied: rank 20 (1/20) or 21 (past k: 0)
    assert u2i_rules.expected_reciprocal_rank(1, [2] * 19 + [1], k=20) == pytest.approx(1 / 40)
    assert u2i_rules.expected_reciprocal_rank(1, [2] * 20, k=20) == 0.0


def test_an_item_line_gives_its_brand_and_sub_category():
    line = "Corva Pro Hiking Boot (white, x-large) | Fashion > Footwear > Boots"
    assert u2i_rules.item_of(line) == ("Corva", "Footwear")
    with pytest.raises(ValueError, match="not an item line"):
        u2i_rules.item_of("Corva Pro Hiking Boot")


def test_the_rules_score_the_synthetic_test_split(tmp_path, capsys):
    synthesize(tmp_path / "data", seed=0, scale="tiny")
    assert u2i_rules.main(["--data", str(tmp_path / "data")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "U2I mrr@20 of plain rules (64 test records, 19 sampled negatives)"
    scores = {line.rsplit(None, 1)[0].strip(): float(line.rsplit(None, 1)[1]) for line in lines[1:]}
    assert list(scores) == list(u2i_rules.RULES)
    assert all(0.0 < score <= 1.0 for score in scores.values())


def test_bad_input_is_one_line(tmp_path, capsys):
    assert u2i_rules.main(["--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("u2i_rules: error: ") and "\n" not in err
