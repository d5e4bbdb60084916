"""What a rerun does with an earlier run's folder (recfound.train.resume), on folders laid out as a
stopped run leaves them: resumed from the latest registered checkpoint with the same settings; refused,
naming every difference, with other settings, other data, a finished run or one that stopped itself;
started over with --overwrite. The run folder's marker keeps the MLflow run and the data hash."""

from __future__ import annotations

import json

import pytest

from recfound.config import load_config, save_config
from recfound.run_folder import RunFolder
from recfound.train.resume import Resume, plan_restart


def _settings(tmp_path, *extra: str):
    return load_config(None, ["run.name=r", f"run.output_dir={tmp_path / 'runs'}", "train.steps=8", *extra],
                       check_paths=False)


def _stopped_run(tmp_path, steps=(2, 4)) -> None:
    """A run folder as a stopped run leaves it: config, marker, checkpoints and Ray Train's snapshot."""
    config = _settings(tmp_path)
    with RunFolder(config.run.output_dir, config.run.name) as folder:
        folder.note(mlflow_run_id="abc123", data_hash="feedface")
        save_config(config, folder.path / "config.yaml")
        results = []
        for step in steps:
            name = f"checkpoint_2026-12-01_00-00-0{step}"
            (folder.path / name).mkdir()
            results.append({"checkpoint_dir_name": name, "metrics": {"step": step}})
        (folder.path / "checkpoint_manager_snapshot.json").write_text(json.dumps({"checkpoint_results": results}))


def _plan(config, overwrite=False):
    with RunFolder(config.run.output_dir, config.run.name) as folder:
        return plan_restart(config, folder, overwrite)


def test_the_same_settings_resume_from_the_latest_registered_checkpoint(tmp_path, capsys):
    _stopped_run(tmp_path)
    (tmp_path / "runs" / "r" / "checkpoint_2026-12-01_00-00-09").mkdir()  # copied, never registered
    resume = _plan(_settings(tmp_path))
    assert resume == Resume(4, "checkpoint_2026-12-01_00-00-04", "abc123", "feedface")
    assert "== resuming run 'r' from its checkpoint of step 4 (checkpoint_2026-12-01_00-00-04)" in capsys.readouterr().out
    # A refused attempt in between keeps the marker's MLflow run and data hash for the next one.
    with pytest.raises(FileExistsError):
        _plan(_settings(tmp_path, "train.lr=0.001"))
    assert _plan(_settings(tmp_path)).mlflow_run_id == "abc123"
    with pytest.raises(FileExistsError, match=r"run 'r' was started on other data \(data_hash feedface, now 0123\)"):
        resume.check_data("r", "0123")
    resume.check_data("r", "feedface")


def test_a_run_saved_before_presets_and_pretraining_resumes_only_as_it_trained(tmp_path):
    """config.yaml written before `sched.preset` and `model.pretrain_steps` existed: that run trained with the
    paper's formulas on the preset's random weights; today's defaults are refused naming both, its own resume."""
    import yaml

    _stopped_run(tmp_path)
    path = tmp_path / "runs" / "r" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["sched"]["preset"], saved["model"]["pretrain_steps"]
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(FileExistsError, match=r"other settings \(model\.pretrain_steps: 0 -> 150; sched\.preset: "
                                              r"'paper' -> 'authors'\)"):
        _plan(_settings(tmp_path))
    assert _plan(_settings(tmp_path, "model.pretrain_steps=0", "sched.preset=paper")).step == 4
    # A run of another backbone ignored model.pretrain_steps: none is read for it, today's default resumes it.
    saved["model"]["backbone"] = "smollm2"
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(FileExistsError, match=r"other settings \(sched\.preset: 'paper' -> 'authors'\)"):
        _plan(_settings(tmp_path, "model.backbone=smollm2"))


def test_other_settings_are_refused_naming_each_difference(tmp_path):
    _stopped_run(tmp_path)
    with pytest.raises(FileExistsError, match=r"run 'r' was started with other settings \(train\.lr: 0\.005 -> 0\.001; "
                                              r"train\.steps: 8 -> 9\); rerun with its settings to resume it, or "
                                              r"pass --overwrite to start over"):
        _plan(_settings(tmp_path, "train.lr=0.001", "train.steps=9"))


def test_finished_self_stopped_and_unregistered_runs_are_refused_and_overwrite_starts_over(tmp_path):
    _stopped_run(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    (run_dir / "stopped.txt").write_text("2 steps in a row had a non-finite loss")
    with pytest.raises(FileExistsError, match=r"run 'r' stopped itself \(2 steps in a row had a non-finite loss\); "
                                              "resuming it would stop again"):
        _plan(_settings(tmp_path))
    (run_dir / "summary.txt").write_text("done")
    with pytest.raises(FileExistsError, match="run 'r' already finished"):
        _plan(_settings(tmp_path))
    for name in ("summary.txt", "stopped.txt", "checkpoint_manager_snapshot.json"):
        (run_dir / name).unlink()
    with pytest.raises(FileExistsError, match="none that Ray Train registered"):
        _plan(_settings(tmp_path))
    assert _plan(_settings(tmp_path), overwrite=True) is None
    assert [entry.name for entry in run_dir.iterdir()] == [".recfound-run"]


def test_a_run_that_stopped_itself_before_its_first_checkpoint_leaves_nothing_to_the_next_start(tmp_path):
    """Rerun (with the advised lower learning rate) after a run stopped itself with no checkpoint: a fresh start
    in an emptied folder; its stopped.txt would otherwise fail the new run's end, or refuse its resume."""
    config = _settings(tmp_path)
    run_dir = tmp_path / "runs" / "r"
    with RunFolder(config.run.output_dir, config.run.name) as folder:
        save_config(config, folder.path / "config.yaml")
        (folder.path / "stopped.txt").write_text("3 steps in a row had a non-finite loss; lower train.lr")
    assert _plan(_settings(tmp_path, "train.lr=0.0001")) is None
    assert [entry.name for entry in run_dir.iterdir()] == [".recfound-run"]
    (run_dir / "summary.txt").write_text("done")  # a finished run stays refused, checkpoints or not
    with pytest.raises(FileExistsError, match="run 'r' already finished"):
        _plan(_settings(tmp_path))
