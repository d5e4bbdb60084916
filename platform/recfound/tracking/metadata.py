"""Run metadata for a run's page in the MLflow UI: its source (entry point, local or a Ray job), git
commit, user and recfound version as tags, and the corpus as a dataset input."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mlflow.utils.mlflow_tags import (MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT,
                                      MLFLOW_GIT_REPO_URL, MLFLOW_PARENT_RUN_ID, MLFLOW_SOURCE_NAME,
                                      MLFLOW_SOURCE_TYPE, MLFLOW_USER)

import recfound
from recfound.tracking.store import absolute_location, client

VERSION_TAG = "recfound.version"
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # Ray sets it in the entry point of `ray job submit`
GIT_TIMEOUT_S = 5.0
# What a nested run takes from its parent: a sweep's trials run in Ray workers, whose command line
# (Ray's worker script) and working directory say nothing about how the sweep was started.
INHERITED = (MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE, MLFLOW_USER, MLFLOW_GIT_COMMIT, MLFLOW_GIT_BRANCH,
             MLFLOW_GIT_REPO_URL)


def entry_point(argv: Sequence[str]) -> str:
    """What started the process: `recfound <command>` for the console script, else the script as
    given on the command line (`jobs/train.py`)."""
    if not argv or not argv[0]:
        return "python"
    if argv[0] == "-c":
        return "python -c"
    commands = [arg for arg in argv[1:] if not arg.startswith("-")]
    if Path(argv[0]).name == "recfound" and commands:
        return f"recfound {commands[0]}"
    return argv[0]


def source_type(environ: Mapping[str, str]) -> str:
    """MLflow's source type: JOB in the entry point of a Ray job, else LOCAL."""
    return "JOB" if RAY_JOB_ENV in environ else "LOCAL"


def _git(folder: Path, *args: str) -> str | None:
    """The output of `git -C folder args`, or None when git is missing, fails, hangs or prints nothing."""
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    output = done.stdout.strip()
    return output if done.returncode == 0 and output else None


def _without_credentials(url: str) -> str:
    """A remote URL without its user part (`https://token@host/repo` -> `https://host/repo`)."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def git_tags(folders: Sequence[Path]) -> dict[str, str]:
    """MLflow's git tags of the first folder inside a git checkout: the commit, and the branch and the
    `origin` remote when there are. {} when none is (git missing, or a copy without .git such as a
    `ray job submit` working dir)."""
    for folder in folders:
        commit = _git(folder, "rev-parse", "HEAD")
        if commit is None:
            continue
        tags = {MLFLOW_GIT_COMMIT: commit}
        branch = _git(folder, "rev-parse", "--abbrev-ref", "HEAD")
        if branch and branch != "HEAD":  # "HEAD": a detached checkout
            tags[MLFLOW_GIT_BRANCH] = branch
        remote = _git(folder, "remote", "get-url", "origin")
        if remote:
            tags[MLFLOW_GIT_REPO_URL] = _without_credentials(remote)
        return tags
    return {}


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return None


def source_tags(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of this process's runs: `mlflow.source.name` (entry point), `mlflow.source.type`
    (LOCAL or JOB), `mlflow.user`, the git tags of the package's source folder (else of the current
    directory) and `recfound.version`."""
    tags = {MLFLOW_SOURCE_NAME: entry_point(sys.argv if argv is None else argv),
            MLFLOW_SOURCE_TYPE: source_type(os.environ if environ is None else environ),
            VERSION_TAG: recfound.__version__}
    user = _user()
    if user:
        tags[MLFLOW_USER] = user
    tags.update(git_tags([Path(recfound.__file__).resolve().parent, Path.cwd()]))
    return tags


def run_tags(tracking_uri: str, parent_run_id: str | None = None) -> dict[str, str]:
    """`source_tags()`, and for a run nested under `parent_run_id` that link and the parent's source,
    user and git tags (see INHERITED)."""
    tags = source_tags()
    if parent_run_id:
        parent = client(tracking_uri).get_run(parent_run_id).data.tags
        tags.update({key: parent[key] for key in INHERITED if key in parent})
        tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    return tags


def log_dataset(tracking_uri: str, run_id: str, name: str, digest: str, location: str | Path,
                context: str = "training", profile: Mapping[str, object] | None = None) -> None:
    """Record a dataset input of run `run_id`: `name`, `digest`, its source (`location` made absolute,
    or the URI as it is), the `context` it was used in and an optional JSON `profile` (e.g. counts)."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    with warnings.catch_warnings():  # MLflow registers its local source twice and warns about every path
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(absolute_location(location))
    fields = MetaDataset(source, name=name, digest=digest).to_dict()
    dataset = Dataset(**fields, profile=json.dumps(dict(profile)) if profile else None)
    inputs = [DatasetInput(dataset, [InputTag(MLFLOW_DATASET_CONTEXT, context)])]
    try:
        client(tracking_uri).log_inputs(run_id, inputs)
    except MlflowException as error:
        # Runs of one experiment logging the same dataset at once (a sweep's concurrent trials) race to insert
        # its row (SQLite: "UNIQUE constraint failed", PostgreSQL: "duplicate key ... unique constraint"); the
        # store reuses an existing row, so the loser's second try links to the winner's.
        if "unique constraint" not in str(error).lower():
            raise
        client(tracking_uri).log_inputs(run_id, inputs)
