"""bench/task_learning.py: the single-process learning check behind docs/training.md's measurements runs
the training step, reports each chosen task at every point, and refuses bad input with one line."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from recfound.tasks import get_task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import task_learning  # noqa: E402


def rows(output: str) -> dict[str, list[str]]:
    """{task: [metric, 'val / metric' per point]} of the printed table."""
    lines = output.split("validation loss / ", 1)[1].splitlines()  # title, header, rule, rows
    cells = [re.split(r"\s{2,}", line.strip()) for line in lines[3:] if line.strip()]
    return {row[0]: row[1:] for row in cells}


def test_reports_every_chosen_task_at_every_point_and_the_generative_loss_falls(tiny_corpus, capsys):
    data, tokenizer = tiny_corpus
    code = task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", "--tasks", "PM,I2I",
                               "--steps", "10", "--points", "4", "--generative-batch", "8", "--records", "4",
                               "--max-new-tokens", "4", "--set", "tmole.dropout=0"])
    assert code == 0
    output = capsys.readouterr().out
    header = next(line for line in output.splitlines() if line.strip().startswith("task"))
    assert re.split(r"\s{2,}", header.strip()) == ["task", "metric", "step 0", "step 3", "step 5", "step 8", "step 10"]
    table = rows(output)
    assert list(table) == ["I2I", "PM"]  # registry order, whatever the order given
    for task, (metric, *points) in table.items():
        assert metric == get_task(task).metric and len(points) == 5
        assert all(0.0 <= float(point.split(" / ")[1]) <= 1.0 for point in points)
    losses = [float(point.split(" / ")[0]) for point in table["PM"][1:]]
    # The preset's random weights start near ln(vocabulary) ~ 6.9 nats a token; ten steps of the adapter at
    # the demo's learning rate take off more than one nat.
    assert losses[-1] < losses[0] - 1.0, losses


def test_generative_tasks_alone_feed_the_embedding_branch_with_i2i_unreported(tiny_corpus, capsys):
    data, tokenizer = tiny_corpus
    assert task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", "--tasks", "SR",
                               "--steps", "2", "--points", "1", "--embedding-batch", "4", "--generative-batch", "4",
                               "--records", "2", "--max-new-tokens", "2"]) == 0
    assert list(rows(capsys.readouterr().out)) == ["SR"]


def test_the_evaluation_points_end_at_the_last_step():
    assert task_learning.point_steps(10, 4) == [3, 5, 8, 10]
    assert task_learning.point_steps(7, 3) == [3, 5, 7]
    assert task_learning.point_steps(120, 4) == [30, 60, 90, 120]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "U2I,XYZ"], "unknown task(s) XYZ"),
    (["--tasks", "U2I", "--steps", "4", "--points", "5"], "--points between 1 and --steps"),
    (["--tasks", "SR,SR"], "--tasks names a task twice"),
    (["--tasks", "U2I,Q2I"], "at least one generative task"),
    (["--tasks", "SR", "--set", "train.steps=5"], "--set train.steps: this script sets it from --steps"),
])
def test_bad_arguments_are_refused_with_one_line(tiny_corpus, capsys, argv, message):
    data, tokenizer = tiny_corpus
    with pytest.raises(SystemExit):
        task_learning.main(["--data", data, "--tokenizer", tokenizer, "--backbone", "tiny", *argv])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"--set": "trian.lr=0.1"}, "trian"),
    ({"--data": "no-such-folder"}, "no-such-folder"),
])
def test_a_bad_setting_or_folder_ends_with_one_line_and_status_2(tiny_corpus, capsys, tmp_path, change, message):
    data, tokenizer = tiny_corpus
    options = {"--data": data, "--tokenizer": tokenizer, "--backbone": "tiny", "--tasks": "SR", **change}
    if change.get("--data"):
        options["--data"] = str(tmp_path / change["--data"])
    argv = [part for pair in options.items() for part in pair]
    assert task_learning.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("task_learning: error: ") and message in error and "\n" not in error
