"""A quiet console: our progress lines and tables, not the libraries' chatter.

Ray, Ray Train, Ray Data, DeepSpeed, MLflow, transformers, torch and matplotlib each print progress
bars, INFO lines or deprecation warnings that our own lines already say (or that say nothing to a
user). `quiet_process()` turns them down in the driver before those libraries are imported;
`quiet_worker()` does the same inside Ray workers (training ranks, evaluation tasks), whose output
reaches the driver's console. Warnings and errors still show. `recfound --verbose` (or
`RECFOUND_VERBOSE=1`) leaves everything as the libraries set it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "RECFOUND_VERBOSE"

# Read by the libraries when they start or when they draw a bar (set before they are imported).
QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables...", input-example checks
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts" bars
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "View run ... at http://..." from a tracking server
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar follows this switch
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_DATA_LOG_LEVEL": "WARNING",  # every dataset's plan and progress
}
QUIET_LOGGERS = ("mlflow", "ray.data", "ray.train", "deepspeed", "DeepSpeed", "matplotlib", "transformers")
# Warnings our own lines already give: the training loop reports every skipped step itself.
REPEATED_WARNINGS = {"DeepSpeed": ("OVERFLOW! Skipping step",)}


class _DropRepeated(logging.Filter):
    """Drops records whose message contains one of `fragments`."""

    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in record.getMessage() for fragment in self.fragments)


def verbose() -> bool:
    """Whether the user asked for the libraries' own output."""
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def set_verbose(on: bool) -> None:
    """Record the choice for this process and the private clusters it starts (their workers inherit it).
    What `quiet_process` turned down stays down for the rest of the process."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def quiet_process() -> None:
    """Turn the libraries down in this process (unless verbose); safe to call more than once."""
    if not sys.stdout.isatty():  # a log file or a pipe: the workers' lines Ray forwards without colour codes
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, fragments in REPEATED_WARNINGS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRepeated) for f in logger.filters):
            logger.addFilter(_DropRepeated(fragments))
    # Only says that the progress bars we turned off are off ("Progress bars disabled. To enable ...").
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    # DeepSpeed's ZeRO calls torch collectives torch has renamed (all_gather_into_tensor, reduce_scatter_tensor);
    # the warning is DeepSpeed's to act on.
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)


def quiet_worker() -> None:
    """`quiet_process` for a Ray worker, plus the switches its already-imported libraries read once."""
    quiet_process()
    if verbose():
        return
    import transformers
    from ray.train.v2._internal.execution import context  # Ray 2.60 (pinned)

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    # "Reporting training result N: TrainingReport(...)" for every checkpoint and rank, at INFO on a
    # logger Ray names by its file path (so outside "ray.train"), under the workers' INFO root logger.
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def worker_line(text: str) -> None:
    """One line on a Ray Train worker's console. The workers' `print` is Ray Train's: it logs the line and,
    where a library has wrapped stdout (MLflow does), prints it as well, so it would show twice."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ray_log_level() -> int:
    """The level of Ray's own driver-side logger ("Started a local Ray instance", ...)."""
    return logging.INFO if verbose() else logging.WARNING


def train_log_level() -> str:
    """The console level of Ray Train's controller and workers ("Reporting training result ...")."""
    return "INFO" if verbose() else "WARNING"
