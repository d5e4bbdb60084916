"""bench/in_context_copy.py: the copy check behind docs/training.md's AVE measurements scores the right
positions (a model that copies by construction gets exactly 1 on the second copy), runs on a preset with a
corpus, and refuses bad input with one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import in_context_copy  # noqa: E402


class LookBack(torch.nn.Module):
    """Predicts at position t the token `distance - 1` places back (token 0 where there is none): reading
    span + span with distance = the span's length, that is the next token of every second copy."""

    def __init__(self, vocab: int, distance: int) -> None:
        super().__init__()
        self.vocab, self.distance = vocab, distance

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        back = self.distance - 1
        source = torch.cat([torch.zeros_like(input_ids[:, :back]), input_ids[:, :-back]], dim=1)
        return SimpleNamespace(logits=torch.nn.functional.one_hot(source, self.vocab).float())


def test_a_model_that_copies_scores_one_on_the_second_copy_only():
    spans = torch.tensor([[0, 6, 0, 8], [9, 9, 3, 4]])
    first, second = in_context_copy.copy_accuracy(LookBack(vocab=10, distance=4), spans)
    assert second == 1.0
    # the first copy's targets [6, 0, 8] and [9, 3, 4] are guessed 0 (nothing 3 places back): one right
    assert first == pytest.approx(1 / 6)
    # one place further back, the second copy's guesses are the tokens before: [0, 6, 0] for [6, 0, 8] and
    # [9, 9, 3] for [9, 3, 4], one right
    _, off_by_one = in_context_copy.copy_accuracy(LookBack(vocab=10, distance=5), spans)
    assert off_by_one == pytest.approx(1 / 6)


def test_a_random_preset_prints_both_kinds_and_copies_no_random_span(tiny_corpus, capsys):
    data, tokenizer = tiny_corpus
    assert in_context_copy.main(["--backbone", "tiny", "--tokenizer", tokenizer, "--data", data,
                                 "--spans", "8", "--length", "12"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "top-1 accuracy over a repeated span (8 spans of 12 tokens, tiny)"
    rows = {cells[0]: [float(x) for x in cells[1:]] for cells in (re.split(r"\s+", line.strip()) for line in lines[2:])}
    assert list(rows) == ["text", "random"]
    assert all(0.0 <= value <= 1.0 for values in rows.values() for value in values)
    assert rows["random"][1] < 0.1  # random weights: no copying (chance is 1 in 1,024)


def test_bad_input_is_one_line(tiny_corpus, capsys, tmp_path):
    _, tokenizer = tiny_corpus
    assert in_context_copy.main(["--backbone", "tiny", "--tokenizer", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("in_context_copy: error: ") and "missing" in err and "\n" not in err
