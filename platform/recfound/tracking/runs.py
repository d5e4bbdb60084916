"""Runs: create one with every param and tag, end it with a status, attach files and folders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Param

from recfound.tracking.limits import MAX_TAG_LENGTH, PARAMS_PER_BATCH, chunks, flatten, truncate
from recfound.tracking.store import client, ensure_experiment

STATUSES = ("FINISHED", "FAILED", "KILLED")


def start_run(tracking_uri: str, experiment: str, run_name: str, params: Mapping[str, object],
              tags: Mapping[str, str] | None = None, artifact_root: str | None = None) -> str:
    """Create a run in experiment `experiment` (created if needed, see `ensure_experiment`) with
    `tags` and every param (nested mappings as dotted keys, long values truncated with a marker),
    logged 100 per request; returns the run id."""
    mlflow_client = client(tracking_uri)
    experiment_id = ensure_experiment(tracking_uri, experiment, artifact_root)
    run = mlflow_client.create_run(experiment_id, run_name=run_name,
                                   tags={k: truncate(str(v), MAX_TAG_LENGTH) for k, v in (tags or {}).items()})
    run_id = run.info.run_id
    entries = [Param(key, value) for key, value in flatten(params).items()]
    try:
        for batch in chunks(entries, PARAMS_PER_BATCH):
            mlflow_client.log_batch(run_id, params=batch)
    except BaseException:
        mlflow_client.set_terminated(run_id, status="FAILED")  # no run left RUNNING with half its params
        raise
    return run_id


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End a run as FINISHED, FAILED or KILLED."""
    if status not in STATUSES:
        raise ValueError(f"run status must be one of {', '.join(STATUSES)}, got {status!r}")
    client(tracking_uri).set_terminated(run_id, status=status)


def finish_run_quietly(tracking_uri: str, run_id: str, status: str) -> None:
    """`finish_run` while another error propagates: its own failure (e.g. the store's disk is full)
    becomes a warning line, so it never hides that error."""
    try:
        finish_run(tracking_uri, run_id, status)
    except Exception as err:  # noqa: BLE001 - best effort: the error being raised is the news
        print(f"warning: MLflow run {run_id} could not be marked {status} ({type(err).__name__}: "
              f"{str(err).splitlines()[0] if str(err) else ''})", flush=True)


def reopen_run(tracking_uri: str, run_id: str) -> bool:
    """Mark an ended run RUNNING again (a resumed training run logs on into it); False when the store
    has no such run (deleted, or another store)."""
    from mlflow.exceptions import MlflowException

    try:
        client(tracking_uri).update_run(run_id, status="RUNNING")
    except MlflowException:
        return False
    return True


def _existing(path: Path, kind: str) -> str:
    if not (path.is_file() if kind == "file" else path.is_dir()):
        raise FileNotFoundError(f"{path}: no such {kind} to log as an artifact")
    return str(path)


def log_artifact_files(tracking_uri: str, run_id: str, paths: Sequence[Path],
                       artifact_path: str | None = None) -> None:
    """Upload files into the run's artifacts (under `artifact_path` when given)."""
    mlflow_client = client(tracking_uri)
    for path in paths:
        mlflow_client.log_artifact(run_id, _existing(Path(path), "file"), artifact_path)


def log_artifact_dir(tracking_uri: str, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
    """Upload a folder's contents into the run's artifacts (under `artifact_path` when given)."""
    client(tracking_uri).log_artifacts(run_id, _existing(Path(folder), "folder"), artifact_path)
