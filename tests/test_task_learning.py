"""bench/task_learning.py: the single-process learning check behind docs/training.md's measurements runs
the training step, reports each chosen task at every point, and refuses bad input with one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from recfound.data.corpus_text import corpus_texts
from recfound.data.synth import synthesize
from recfound.data.tokenizer import build_corpus_tokenizer
from recfound.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import task_learning  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synthesize(root / "data", seed=0, scale="tiny")
    tokenizer = build_corpus_tokenizer(corpus_texts(root / "data"), root / "tokenizer", vocab_size=1024)
    return str(root / "data"), str(tokenizer)


def rows(output: str) -> dict[str, list[str]]:
    """{task: [metric, 'val / metric' per point]} of the printed table."""
    lines = output.split("validation loss / test metric", 1)[1].splitlines()  # title, header, rule, rows
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[3:] if line.strip()]
    return {row[0]: row[1:] for row in cells}


def test_reports_every_chosen_task_at_every_point_and_the_generative_loss_falls(corpus, capsys):
    data, tokenizer = corpus
    code = task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", "--tasks", "SR,PM",
                               "--steps", "12", "--points", "2", "--generative-batch", "8", "--test-records", "4",
                               "--max-new-tokens", "4", "--set", "tmole.dropout=0"])
    assert code == 0
    table = rows(capsys.readouterr().out)
    # Only generative tasks chosen: I2I feeds the embedding branch but is not reported.
    assert sorted(table) == ["PM", "SR"]
    for task, (metric, *points) in table.items():
        assert metric == get_task(task).metric and len(points) == 3  # before training, steps 6 and 12
        losses = [float(point.split(" / ")[0]) for point in points]
        # The preset's random weights start near ln(vocabulary) ~ 6.9 nats a token; twelve steps of the
        # adapter at the demo's learning rate take off more than one nat.
        assert losses[-1] < losses[0] - 1.0, (task, losses)


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "U2I,XYZ"], "unknown task(s) XYZ"),
    (["--tasks", "U2I", "--steps", "4", "--points", "5"], "--points between 1 and --steps"),
])
def test_bad_arguments_are_refused_with_one_line(corpus, capsys, argv, message):
    data, tokenizer = corpus
    with pytest.raises(SystemExit):
        task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", *argv])
    assert message in capsys.readouterr().err


def test_only_embedding_tasks_are_refused(corpus):
    data, tokenizer = corpus
    with pytest.raises(SystemExit, match="at least one generative task"):
        task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", "--tasks", "U2I"])
