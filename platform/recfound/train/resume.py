"""What a training run does with what an earlier process of the same run left in its folder.

- No checkpoint there, or `--overwrite`: the run starts from scratch in the emptied folder (what an earlier
  start left without a checkpoint, e.g. the `stopped.txt` of a run that stopped itself at once, must not
  speak for this one). A finished run is refused even without checkpoints.
- Checkpoints of an unfinished run (killed, stopped by a signal, crashed) and the same settings: the run
  resumes from the latest checkpoint Ray Train registered (Ray Train restores it from the folder's
  `checkpoint_manager_snapshot.json` when the run name and output folder are the same), logging on
  into the same MLflow run.
- Checkpoints and other settings, other data, a finished run or one that stopped itself (too many
  non-finite steps): refused, naming every setting that differs.

A RUNNING MLflow run left by a killed earlier process is marked FAILED either way (it is RUNNING again
while a resumed run trains into it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from recfound import storage
from recfound.config import RunConfig, bounded_repr, config_from_dict, read_yaml
from recfound.run_folder import RunFolder, describe_holder
from recfound.run_layout import CONFIG_FILE, SNAPSHOT_FILE, SUMMARY_FILE, RunLayout
from recfound.train.manifest import written_by


@dataclass(frozen=True)
class Resume:
    """An earlier run of this folder that this one continues."""

    step: int  # the step of the latest registered checkpoint
    checkpoint: str  # its folder name
    mlflow_run_id: str | None  # the MLflow run it logged into
    data_hash: str | None  # the tokenized data it trained on (`launch.data_hash`)

    def check_data(self, name: str, digest: str) -> None:
        """Refuse to go on with other data than the run trained on (FileExistsError)."""
        if self.data_hash is not None and self.data_hash != digest:
            raise FileExistsError(f"run {name!r} was started on other data (data_hash {self.data_hash}, now {digest}): "
                                  "resume it on its data, or pass --overwrite to start over")


def plan_restart(config: RunConfig, folder: RunFolder, overwrite: bool) -> Resume | None:
    """Resume the folder's earlier run (see module doc), start over (None), or refuse (FileExistsError)."""
    if folder.previous is not None:
        print(f"note: an earlier process of run {config.run.name!r}, {describe_holder(folder.previous)}, ended "
              "without finishing (killed or crashed)", flush=True)
        _fail_orphaned_mlflow_run(config, folder.previous.get("mlflow_run_id"))
    layout = RunLayout(folder.location)
    if overwrite:
        folder.empty()
        return None
    start_over = "pass --overwrite to start over, or choose another run.name (--set run.name=...)"
    if storage.is_file(layout.summary):
        raise FileExistsError(f"{layout.location}: run {config.run.name!r} already finished (its {SUMMARY_FILE} is "
                              f"there); {start_over}")
    if not layout.checkpoint_folders():
        folder.empty()
        return None
    if storage.is_file(layout.stopped):
        reason = storage.read_bytes(layout.stopped)[:300].decode("utf-8", errors="replace")
        raise FileExistsError(f"{layout.location}: run {config.run.name!r} stopped itself ({reason}); resuming it "
                              f"would stop again: {start_over}, with other settings")
    latest = latest_registered_checkpoint(layout)
    if latest is None:
        raise FileExistsError(f"{layout.location} holds checkpoint folders of an earlier run named "
                              f"{config.run.name!r} but none that Ray Train registered (no usable {SNAPSHOT_FILE}); "
                              f"{start_over}")
    differences = config_differences(layout.config, config)
    if differences:
        raise FileExistsError(f"{layout.location}: run {config.run.name!r} was started with other settings "
                              f"({'; '.join(differences)}); rerun with its settings to resume it, or {start_over}")
    step, checkpoint = latest
    _check_zero3_workers(config, layout, checkpoint)
    resume = Resume(step, checkpoint, folder.last.get("mlflow_run_id"), folder.last.get("data_hash"))
    print(f"== resuming run {config.run.name!r} from its checkpoint of step {step} ({checkpoint}); "
          "--overwrite would start it over", flush=True)
    return resume


def _check_zero3_workers(config: RunConfig, layout: RunLayout, checkpoint: str) -> None:
    """A ZeRO-3 checkpoint resumes on the number of workers that wrote it (see `recfound.train.optimizer_state`)."""
    if config.train.zero_stage != 3:
        return
    ranks = written_by(layout.checkpoint(checkpoint))
    if ranks != config.train.num_workers:
        raise FileExistsError(f"{layout.checkpoint(checkpoint)} was written by {ranks} ZeRO-3 worker(s): set "
                              f"train.num_workers={ranks} to resume it (ZeRO-3 checkpoints do not move to another "
                              "number of workers)")


def latest_registered_checkpoint(layout: RunLayout) -> tuple[int, str] | None:
    """(step, folder name) of the latest checkpoint in Ray Train's snapshot whose folder exists."""
    try:
        snapshot = json.loads(storage.read_text(layout.snapshot))
        results = snapshot["checkpoint_results"]
        found = [(int(result["metrics"]["step"]), str(result["checkpoint_dir_name"])) for result in results]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    found = [(step, name) for step, name in found if storage.is_dir(layout.checkpoint(name))]
    return max(found) if found else None


# Where the workers run and how many there are, not what they compute: a run may resume with other values
# (the data order and the scheduler do not depend on the number of workers; see docs/training.md).
PLACEMENT_SETTINGS = ("train.num_workers", "train.cpus_per_worker", "train.worker_resource",
                      "train.placement_timeout_s", "checkpoint.max_failures")


def config_differences(saved_location: str, config: RunConfig) -> list[str]:
    """'key: saved -> now' for every setting of `config` that differs from the run's saved config.yaml
    (URIs compared without their passwords, which are never saved), but the placement settings."""
    if not storage.is_file(saved_location):
        return [f"no {CONFIG_FILE} was saved to compare with"]
    saved, now = _saved_config(saved_location).flat(), config.flat()
    return [f"{key}: {bounded_repr(saved.get(key))} -> {bounded_repr(now.get(key))}"
            for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key) and key not in PLACEMENT_SETTINGS]


def _saved_config(location: str) -> RunConfig:
    """A run's saved config.yaml; one saved before `sched.preset` existed trained with the paper's formulas,
    one of a preset saved before `model.pretrain_steps` on the preset's random weights (0)."""
    from recfound.model.presets import PRESETS
    from recfound.sched.scheduler import LEGACY_PRESET

    saved = read_yaml(location) or {}
    if isinstance(saved, dict) and isinstance(saved.get("sched"), dict):
        saved["sched"].setdefault("preset", LEGACY_PRESET)
    model = saved.get("model") if isinstance(saved, dict) else None
    if isinstance(model, dict) and model.get("backbone", RunConfig().model.backbone) in PRESETS:
        model.setdefault("pretrain_steps", 0)
    return config_from_dict(saved, source=str(location))


def _fail_orphaned_mlflow_run(config: RunConfig, run_id: str | None) -> None:
    from recfound import tracking
    from recfound.tracking.store import client

    if not run_id:
        return
    try:
        if client(config.tracking_uri()).get_run(run_id).info.status == "RUNNING":
            tracking.finish_run(config.tracking_uri(), run_id, "FAILED")
            print(f"note: marked its MLflow run {run_id} FAILED", flush=True)
    except Exception as err:  # noqa: BLE001 - another store, or a deleted run: nothing to mark
        print(f"note: its MLflow run {run_id} was not marked failed ({type(err).__name__})", flush=True)
