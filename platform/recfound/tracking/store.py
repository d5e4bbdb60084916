"""Where runs go: the tracking URI (embedded SQLite default or `MLFLOW_TRACKING_URI`), the artifact
root, experiments, and the command that opens the UI.

Every function takes the tracking URI explicitly and talks through its own `MlflowClient`, so nothing
here depends on (or changes) MLflow's global state.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sqlite3
import sys
from pathlib import Path

import mlflow

from recfound.redact import without_password

DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "mlartifacts"


SQLITE_PREFIX = "sqlite:///"
SERVER_CHECK_S = 10.0  # how long a command that reads from a tracking server waits for its first answer
_checked_stores: set[Path] = set()  # SQLite files seen to be MLflow stores by this process
_answering_servers: set[str] = set()  # tracking servers seen to answer by this process (probed once)


def check_store_to_read(tracking_uri: str) -> None:
    """Before a command reads from `tracking_uri` (a registered model, logged runs): it must be a URI, not a
    path; a SQLite store must exist (`check_sqlite_store`); a tracking server must answer its /health within
    SERVER_CHECK_S (MLflow's own retries take minutes to end with a connection error). The probe goes through
    MLflow's own request helper, so it honours the credentials and TLS settings MLflow does."""
    from recfound.config import path_given_as_tracking_uri

    problem = path_given_as_tracking_uri(tracking_uri)
    if problem:
        raise ValueError(f"{problem} (--tracking-uri, or $MLFLOW_TRACKING_URI)")
    check_sqlite_store(tracking_uri, must_exist=True)
    if tracking_uri.startswith(("http://", "https://")) and tracking_uri not in _answering_servers:
        _check_server_answers(tracking_uri)
        _answering_servers.add(tracking_uri)


def _check_server_answers(tracking_uri: str) -> None:
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        http_request(get_default_host_creds(tracking_uri), "/health", "GET", max_retries=0,
                     timeout=SERVER_CHECK_S, raise_on_status=False)
    except MlflowException as wrapped:  # MLflow wraps what requests raised
        err = wrapped.__cause__ or wrapped.__context__
        if not isinstance(err, requests.RequestException):
            raise
        if isinstance(err, requests.Timeout) or "timed out" in str(err):  # (a read timeout comes as a retry error)
            reason = f"no answer within {SERVER_CHECK_S:.0f} s"
        elif isinstance(err, requests.exceptions.SSLError):
            reason = "its TLS certificate was refused: see MLFLOW_TRACKING_SERVER_CERT_PATH"
        elif isinstance(err, requests.ConnectionError):
            reason = "connection refused or host unknown"
        else:
            reason = f"{type(err).__name__}"
        raise ConnectionError(f"the MLflow tracking server at {without_password(tracking_uri)} does not answer "
                              f"({reason}): check that it runs and its address, or give another with "
                              "--tracking-uri (or $MLFLOW_TRACKING_URI)") from None


def filter_value(text: str) -> str | None:
    """`text` quoted for an MLflow filter string, which has no escapes: in the quote mark it does not hold
    (a name may hold an apostrophe); None when it holds both, which no filter can say."""
    quote = '"' if "'" in text else "'"
    return None if quote in text else f"{quote}{text}{quote}"


def client(tracking_uri: str) -> mlflow.MlflowClient:
    """A client bound to `tracking_uri` for both tracking and the model registry (a SQLite file that is not
    an MLflow store is refused: MLflow would add its tables to it)."""
    check_sqlite_store(tracking_uri)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def check_sqlite_store(tracking_uri: str, must_exist: bool = False) -> None:
    """For a SQLite tracking URI: a missing file is fine (MLflow creates the store) unless `must_exist`
    (FileNotFoundError: a command that only reads must not create an empty store); an existing file must be
    empty or an MLflow store (ValueError for another program's database or a file that is not SQLite)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return
    path = Path(tracking_uri[len(SQLITE_PREFIX):].split("?", 1)[0]).resolve()
    if not path.is_file():
        if must_exist:
            raise FileNotFoundError(f"{tracking_uri}: no MLflow store there (nothing was logged to it); give the "
                                    "store the runs were logged to (--tracking-uri, or $MLFLOW_TRACKING_URI)")
        return
    if path in _checked_stores:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as database:
            tables = {name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError:  # locked, or a crashed writer's journal a read-only look cannot roll back
        return  # MLflow opens it read-write (and recovers it); looked at again next time
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{tracking_uri}: not a SQLite database ({err}); give an MLflow store's file") from None
    if tables and "alembic_version" not in tables:  # every MLflow store has it
        raise ValueError(f"{tracking_uri}: another program's SQLite database (tables: {', '.join(sorted(tables)[:5])}), "
                         "not an MLflow store; give another file")
    _checked_stores.add(path)


def default_tracking_uri(output_dir: str | Path) -> str:
    """`$MLFLOW_TRACKING_URI` when set, else a SQLite store `<output_dir>/mlflow.db` (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / DB_NAME}"


def default_artifact_root(output_dir: str | Path) -> str:
    """The embedded default's artifact folder, `<output_dir>/mlartifacts`, as an absolute file URI."""
    return (Path(output_dir).resolve() / ARTIFACTS_NAME).as_uri()


def is_uri(location: str) -> bool:
    """Whether `location` is a URI (`s3://...`, `file:...`) rather than a plain path."""
    return "://" in location or location.startswith("file:")


def absolute_location(location: str | Path) -> str:
    """A URI as it is, a plain path made absolute (relative to the current directory)."""
    return location if isinstance(location, str) and is_uri(location) else str(Path(location).resolve())


def _location(artifact_root: str) -> str:
    """An artifact root as a URI: URIs pass through, a plain path becomes an absolute file URI."""
    return artifact_root if is_uri(artifact_root) else Path(artifact_root).resolve().as_uri()


def ensure_experiment(tracking_uri: str, name: str, artifact_root: str | None = None) -> str:
    """The id of experiment `name`, created (with `artifact_root` as its artifact location when given,
    else the server's default) if it does not exist; a deleted one of that name is restored."""
    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(name)
    if found is None:
        location = _location(artifact_root) if artifact_root else None
        return mlflow_client.create_experiment(name, artifact_location=location)
    if found.lifecycle_stage == "deleted":
        mlflow_client.restore_experiment(found.experiment_id)
    return found.experiment_id


def _bin_dir() -> Path:
    """The scripts folder of the environment running this code (e.g. `<repo>/.venv/bin`), not resolved:
    a virtual environment's python is a link to the system one."""
    return Path(sys.executable).absolute().parent


def _mlflow() -> str:
    """This environment's `mlflow` by absolute path, so a printed command works without the environment
    activated; `python -m mlflow` where the environment has no mlflow script."""
    script = _bin_dir() / "mlflow"
    return shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(sys.executable)} -m mlflow"


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """What a user runs (or opens) to see the runs: the server's address for http(s) URIs, else an
    `mlflow ui` command on the store that works from a plain shell, lean enough for a laptop (one
    worker, no job runner). Never with the store's password (`recfound.redact`)."""
    tracking_uri = without_password(tracking_uri)
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return (f"MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false {_mlflow()} ui --backend-store-uri "
            f"{shlex.quote(tracking_uri)} --workers 1 --host 127.0.0.1 --port {port}")


def serve_command(tracking_uri: str, model_uri: str, port: int = 5001, host: str = "127.0.0.1") -> str:
    """The shell command that serves `model_uri` (e.g. models:/recfound-demo/1) over REST with this
    environment (`POST /invocations`, `GET /ping`), from a plain shell. Never with the store's password."""
    tracking_uri = without_password(tracking_uri)
    # MLflow starts its scoring server as `uvicorn` looked up on PATH, hence this environment's scripts first.
    return (f"PATH={shlex.quote(str(_bin_dir()))}:\"$PATH\" MLFLOW_TRACKING_URI={shlex.quote(tracking_uri)} "
            f"{_mlflow()} models serve -m {shlex.quote(model_uri)} --env-manager local --host {host} --port {port}")
