"""Log an adapter as an MLflow model of its run and register it in the Model Registry.

`mlflow.register_model("runs:/<id>/<dir>")` refuses a plain artifact folder, so the adapter is
logged as a real pyfunc model (`recfound.tracking.pyfunc`) named `merged_model`, through the
client only (no global MLflow state), and its registered versions point at that logged model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModel, LoggedModelOutput
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from recfound import storage
from recfound.data.tokenize import TokenLimits
from recfound.data.tokenizer import resolve_tokenizer
from recfound.model.backbone import portable_spec
from recfound.model.objectives import EmbeddingConfig
from recfound.model.state import read_adapter
from recfound.redact import without_password
from recfound.tracking.pyfunc import (ADAPTER, BACKBONE, INPUT_EXAMPLE, MODEL_CODE, SERVING, SIGNATURE, TOKENIZER,
                                      ServingConfig)
from recfound.tracking.store import client, filter_value

MODEL_NAME = "merged_model"
# Pinned from this environment so MLflow does not infer them; recfound itself must be installed
# where the model is served (it is not on PyPI).
REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "peft", "pyarrow", "pandas", "mlflow")
_LISTED = 20  # registered model names an error lists at most


@dataclass(frozen=True)
class RegisteredAdapter:
    """The logged model (`models:/<model id>`) and, when registered, its name and version."""

    model_uri: str
    name: str | None
    version: str | None

    @property
    def registered_uri(self) -> str | None:
        """`models:/<name>/<version>`, or None when the model was not registered."""
        return f"models:/{self.name}/{self.version}" if self.name else None


def pip_requirements() -> list[str]:
    """`package==version` for the serving dependencies installed here (local labels like +cpu dropped)."""
    pins = []
    for package in REQUIREMENTS:
        try:
            pins.append(f"{package}=={metadata.version(package).split('+')[0]}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_and_register_adapter(tracking_uri: str, run_id: str, adapter_file: Path, tokenizer_dir: Path, backbone: str,
                             backbone_seed: int, name: str | None, tags: Mapping[str, str], dtype: str = "float32",
                             embedding: EmbeddingConfig = EmbeddingConfig(),
                             limits: TokenLimits = TokenLimits(),
                             backbone_folder: storage.Location | None = None,
                             tasks: Sequence[str] | None = None) -> RegisteredAdapter:
    """Log `adapter_file` with its tokenizer and backbone (spec, seed, dtype) as the pyfunc model
    `merged_model` of run `run_id`, and register it as a new version of `name` (unless None) with the
    version tags run_id, base_model and `tags` (which should carry data_hash). `embedding` and `limits`
    are the pooling and token-length options the adapter was trained with. `backbone_folder` (a local
    path or URI: a run's pre-trained preset, small) is carried inside the model and loaded in place of
    `backbone`, so the model serves where the run folder is not. `tasks` are those the run trained: the
    served model refuses the others (None: any task of the adapter). A relative `backbone` path is stored
    absolute, so that the model loads from any directory of this machine."""
    read_adapter(adapter_file)  # refuse a file that is not an adapter before creating anything
    serving = ServingConfig(backbone=portable_spec(str(backbone)), backbone_seed=int(backbone_seed), dtype=dtype,
                            pool_instruction=embedding.pool_instruction, bidirectional=embedding.bidirectional,
                            limits=limits, tasks=None if tasks is None else tuple(tasks))
    mlflow_client = client(tracking_uri)
    model = mlflow_client.create_logged_model(mlflow_client.get_run(run_id).info.experiment_id, name=MODEL_NAME,
                                              source_run_id=run_id)
    try:
        with tempfile.TemporaryDirectory() as staging:
            artifacts = {ADAPTER: str(adapter_file), TOKENIZER: str(resolve_tokenizer(tokenizer_dir)),
                         SERVING: str(serving.write(Path(staging) / "serving.json"))}
            if backbone_folder is not None:
                artifacts[BACKBONE] = str(storage.download(backbone_folder, Path(staging) / "backbone"))
            local = Path(staging) / "model"
            mlflow.pyfunc.save_model(
                str(local), python_model=str(MODEL_CODE), artifacts=artifacts, signature=SIGNATURE,
                input_example=INPUT_EXAMPLE, pip_requirements=pip_requirements(),
                mlflow_model=Model(artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id,
                                   model_uuid=model.model_id))
            mlflow_client.log_model_artifacts(model.model_id, str(local))
        mlflow_client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        mlflow_client.finalize_logged_model(model.model_id, "FAILED")
        raise
    mlflow_client.finalize_logged_model(model.model_id, "READY")
    model_uri = f"models:/{model.model_id}"
    if name is None:
        return RegisteredAdapter(model_uri, None, None)
    version = _register(mlflow_client, model, name, {"run_id": run_id, "base_model": str(backbone), **tags})
    return RegisteredAdapter(model_uri, name, version)


def _register(mlflow_client: mlflow.MlflowClient, model: LoggedModel, name: str, tags: Mapping[str, str]) -> str:
    """A new version of registered model `name` (created if needed) for the logged model; its number."""
    try:
        mlflow_client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # The source is the logged model's artifact location, not its models:/ URI, which a SQL registry
    # store resolves through MLflow's global tracking URI.
    created = mlflow_client.create_model_version(name, source=model.artifact_location, run_id=model.source_run_id,
                                                 model_id=model.model_id, tags=dict(tags))
    version = str(created.version)
    # As MLflow's own registration does: the logged model's page links to its registered versions.
    mlflow_client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
        [{"name": name, "version": version}])})
    return version


def resolve_version(tracking_uri: str, name: str, version_or_alias: str | int) -> str:
    """The version number that `version_or_alias` of registered model `name` means: a number (that
    exists), 'latest' the highest number, anything else an alias (e.g. 'champion'). A KeyError names what
    exists when there is no such model (the registered names) or version or alias (the model's)."""
    mlflow_client = client(tracking_uri)
    aliases = _registered_model(mlflow_client, tracking_uri, name).aliases
    versions = sorted(int(v.version) for v in mlflow_client.search_model_versions(_name_is(name)))
    reference = str(version_or_alias)
    if reference.isdigit() and int(reference) in versions:
        return str(int(reference))
    if reference == "latest" and versions:
        return str(versions[-1])
    if reference in aliases:
        return str(aliases[reference])
    raise KeyError(_no_version(name, reference, versions, aliases))


def _name_is(name: str) -> str:
    """MLflow's filter for the versions of registered model `name`."""
    quoted = filter_value(name)
    if quoted is None:
        raise ValueError(f"registered model {name!r}: a name with both quote marks cannot be looked up by "
                         "MLflow's filter strings; rename it in the registry")
    return f"name = {quoted}"


def _no_version(name: str, reference: str, versions: list[int], aliases: Mapping[str, str]) -> str:
    what = "version" if reference.isdigit() else "version or alias"
    existing = ", ".join(map(str, versions)) or "none"
    named = ", ".join(f"{alias} (version {number})" for alias, number in sorted(aliases.items())) or "none"
    return f"registered model {name!r} has no {what} {reference!r}; its versions: {existing}; aliases: {named}"


def _registered_model(mlflow_client: mlflow.MlflowClient, tracking_uri: str, name: str) -> RegisteredModel:
    """Registered model `name`, or a KeyError that lists the registered models' names."""
    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    names = [model.name for model in mlflow_client.search_registered_models(max_results=_LISTED + 1)]
    listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
    raise KeyError(f"no registered model {name!r} at {without_password(tracking_uri)}; "
                   + (f"registered models: {listed}" if names else "no model is registered there")) from None


def download_registered_adapter(tracking_uri: str, name: str, version_or_alias: str | int,
                                dst_path: Path | None = None) -> Path:
    """Download version, alias or 'latest' of registered model `name` (into `dst_path`, else a
    temporary folder); the local model folder."""
    version = resolve_version(tracking_uri, name, version_or_alias)
    source = client(tracking_uri).get_model_version_download_uri(name, version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri,
                                                    dst_path=str(dst_path) if dst_path else None))


def load_registered_adapter(tracking_uri: str, name: str, version_or_alias: str | int,
                            dst_path: Path | None = None) -> mlflow.pyfunc.PyFuncModel:
    """Download version (e.g. 3), alias (e.g. 'champion') or 'latest' of registered model `name` (into
    `dst_path`, else a temporary folder) and load it as a pyfunc model."""
    return mlflow.pyfunc.load_model(str(download_registered_adapter(tracking_uri, name, version_or_alias, dst_path)))
