"""MLflow tracking of a training job: where runs go, params and per-step metrics, artifacts, and the
adapter logged as a pyfunc model and registered in the Model Registry.

Only the driver and rank 0 talk to MLflow. Every function takes the tracking URI explicitly (no
global MLflow state is read or changed).
"""

from recfound.tracking.logger import StepLogger
from recfound.tracking.metadata import log_dataset, run_tags, source_tags
from recfound.tracking.pyfunc import RecfoundAdapterModel, ServingConfig, load_served_adapter
from recfound.tracking.registry import RegisteredAdapter, load_registered_adapter, log_and_register_adapter
from recfound.tracking.runs import finish_run, finish_run_quietly, log_artifact_dir, log_artifact_files, reopen_run, start_run
from recfound.tracking.store import (default_artifact_root, default_tracking_uri, ensure_experiment,
                                     serve_command, ui_command)

__all__ = [
    "RecfoundAdapterModel", "RegisteredAdapter", "ServingConfig", "StepLogger", "default_artifact_root",
    "default_tracking_uri", "ensure_experiment", "finish_run", "finish_run_quietly", "load_registered_adapter", "load_served_adapter",
    "log_and_register_adapter", "log_artifact_dir", "log_artifact_files", "log_dataset", "reopen_run", "run_tags",
    "serve_command", "source_tags", "start_run", "ui_command",
]
