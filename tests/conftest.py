"""Shared test set-up: an offline, telemetry-free environment and one private local Ray cluster."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Set before anything imports ray/transformers/mlflow/deepspeed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray cluster shared by the whole session (never attaches to a running one)."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rf-ray-")
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def extra_task():
    """A 14th task (a label-set CTR task) registered for one test, then removed again."""
    from recfound import tasks

    task = tasks.register(tasks.Task("CTR", tasks.Kind.GENERATIVE, "click prediction", "accuracy",
                                     tasks.AnswerType.LABEL_SET, ("Click?", "Will they click?", "Predict a click."),
                                     labels=("click", "skip")))
    yield task
    tasks._REGISTRY.pop("CTR")
