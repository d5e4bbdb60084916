"""Which model an evaluation scores, packed so that any Ray worker on any node can load it.

A `ModelSource` carries the adapter file and the tokenizer folder as bytes (a few MB; only the
backbone must exist where it runs, as for the served model) plus what rebuilding the model needs.
Sources: an adapter file (a run's initial, checkpointed, final or merged adapter), a run folder, a
registered MLflow model version, or a bare backbone (the base model zero-shot, no adapter).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from recfound import storage
from recfound.error_chain import first_line
from recfound.model.inference import Inference
from recfound.run_layout import (ADAPTER_FILE, BACKBONE_DIR, CONFIG_FILE, INIT_FILE, MERGED_FILE, TOKENIZER_DIR,
                                 RunLayout)
from recfound.tasks import CarriesAddedTasks
from recfound.tracking.pyfunc import ServingConfig

if TYPE_CHECKING:
    from recfound.config import RunConfig

RUN_MODELS = {"init": INIT_FILE, "merged": MERGED_FILE}  # and "final": the last checkpoint's ADAPTER_FILE


@dataclass(frozen=True)
class ModelSource(CarriesAddedTasks):
    """A loadable model: backbone spec and seed, dtype, tokenizer files, inference options, adapter bytes
    (None: the bare backbone). Its pickle carries the tasks added to the registry: an evaluation worker
    resolves the adapter's and the records' task names."""

    label: str
    serving: ServingConfig
    tokenizer_files: dict[str, bytes]
    adapter: bytes | None = None
    backbone_files: dict[str, bytes] | None = None  # a backbone folder the model carries (a registered model's)

    @classmethod
    def from_adapter_file(cls, label: str, adapter_file: storage.Location, tokenizer_dir: storage.Location,
                          serving: ServingConfig) -> ModelSource:
        """An adapter file, the tokenizer folder it was trained with (local paths or URIs), and how to
        rebuild its base."""
        from recfound.model.state import read_adapter

        read_adapter(adapter_file)  # a clear error for a file that is not an adapter, here and not in a worker
        return cls(label, _absolute_backbone(serving), _folder_files(tokenizer_dir), storage.read_bytes(adapter_file))

    @classmethod
    def from_backbone(cls, label: str, serving: ServingConfig, tokenizer_dir: Path | str) -> ModelSource:
        """The bare backbone of `serving` (no adapter: the base model zero-shot) with a tokenizer folder."""
        return cls(label, _absolute_backbone(serving), _folder_files(tokenizer_dir))

    @classmethod
    def from_run(cls, run_dir: storage.Location, which: str = "merged", label: str | None = None) -> ModelSource:
        """Adapter `which` of a training run folder (a local path or URI): 'init' (before training: the base
        model's outputs), 'final' (the last checkpoint) or 'merged' (TIES; the final adapter when the run
        merged nothing)."""
        layout = RunLayout(run_dir)
        config = run_config(layout)
        if which not in (*RUN_MODELS, "final"):
            raise ValueError(f"{run_dir}: no model {which!r}; choose init, final or merged")
        path = layout.file(RUN_MODELS.get(which, ""))
        if which == "final" or (which == "merged" and not storage.is_file(path)):
            checkpoints = layout.checkpoints()
            if not checkpoints:
                raise FileNotFoundError(f"{run_dir}: the run has no complete checkpoint folder")
            path = checkpoints[-1].adapter
        return cls.from_adapter_file(label or f"{storage.basename(run_dir)}:{which}", path,
                                     run_tokenizer(layout, config), run_serving(layout, config))

    @classmethod
    def from_registered(cls, tracking_uri: str, name: str, version: str, label: str | None = None) -> ModelSource:
        """Version (a number, an alias, or 'latest': the highest number) of registered model `name`,
        downloaded from the registry."""
        from recfound.tracking.pyfunc import ADAPTER, BACKBONE, SERVING, TOKENIZER
        from recfound.tracking.registry import resolve_version
        from recfound.tracking.store import check_store_to_read

        check_store_to_read(tracking_uri)  # loading a model creates no store, and waits for no silent server
        number = resolve_version(tracking_uri, name, version)
        with tempfile.TemporaryDirectory(prefix="recfound-eval-") as folder:
            artifacts = _registered_artifacts(tracking_uri, name, number, Path(folder))
            source = cls.from_adapter_file(label or f"{name}/{number}", artifacts[ADAPTER], artifacts[TOKENIZER],
                                           ServingConfig.read(artifacts[SERVING]))
            carried = _folder_files(artifacts[BACKBONE], "config.json", "model") if BACKBONE in artifacts else None
            return replace(source, backbone_files=carried)

    @contextmanager
    def opened(self, device: torch.device | str = "cpu") -> Iterator[Inference]:
        """The model loaded on `device` for inference (its files live in a temporary folder meanwhile)."""
        from recfound.data.tokenizer import load_tokenizer
        from recfound.model.backbone import load_backbone
        from recfound.tracking.pyfunc import load_served_adapter

        with self._unpacked() as (folder, serving):
            tokenizer, options = folder / TOKENIZER_DIR, serving.options()
            if self.adapter is None:
                _, info = load_tokenizer(tokenizer)
                backbone = load_backbone(serving.backbone, info, dtype=serving.dtype, seed=serving.backbone_seed)
                yield Inference(backbone.model.to(device), str(tokenizer), options, device=device)
            else:
                adapter = load_served_adapter(folder / ADAPTER_FILE, tokenizer, serving)
                yield Inference.of_adapter(adapter, str(tokenizer), options, device)

    def export_dense(self, task: str, out: Path | str) -> Path:
        """Write the dense model of `task` (the adapter merged into the base weights) with the tokenizer
        files as a plain HF folder `out` (see `recfound.model.state.export_dense`)."""
        from recfound.model.state import export_dense
        from recfound.tracking.pyfunc import load_served_adapter

        if self.adapter is None:
            raise ValueError(f"{self.label}: a bare backbone has no adapter to merge")
        try:
            self.serving.check_trained(task)
        except ValueError as err:
            raise ValueError(f"{self.label}: {err}; export one of those") from None
        with self._unpacked() as (folder, serving):
            adapter = load_served_adapter(folder / ADAPTER_FILE, folder / TOKENIZER_DIR, serving)
            return export_dense(adapter, task, out, folder / TOKENIZER_DIR)

    @contextmanager
    def _unpacked(self) -> Iterator[tuple[Path, ServingConfig]]:
        """(a temporary folder holding the tokenizer folder and, when there are, the adapter file and the
        carried backbone folder; the serving config that loads from there)."""
        folder = Path(tempfile.mkdtemp(prefix="recfound-model-"))
        try:
            for subfolder, files in ((TOKENIZER_DIR, self.tokenizer_files), (BACKBONE_DIR, self.backbone_files)):
                if files is not None:
                    (folder / subfolder).mkdir()
                    for name, data in files.items():
                        (folder / subfolder / name).write_bytes(data)
            if self.adapter is not None:
                (folder / ADAPTER_FILE).write_bytes(self.adapter)
            carried = self.backbone_files is not None
            yield folder, replace(self.serving, backbone=str(folder / BACKBONE_DIR)) if carried else self.serving
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def run_serving(layout: RunLayout, config: RunConfig) -> ServingConfig:
    """What rebuilding a run folder's model needs: `serving_of` its config, on the backbone the run
    pre-trained for itself when its config says it did (`backbone/`, see recfound.data.prepare.prepare_backbone;
    a folder left by an earlier run of the same name is not used)."""
    from recfound.model.pretrain import MARKER, pretrains

    serving = serving_of(config)
    own = pretrains(config.model) and storage.is_file(storage.join(layout.backbone, MARKER))
    return replace(serving, backbone=storage.normalize(layout.backbone)) if own else serving


def serving_of(config: RunConfig) -> ServingConfig:
    """What rebuilding a run's model needs, from its RunConfig."""
    return ServingConfig(backbone=config.model.backbone, backbone_seed=config.run.seed, dtype=config.model.dtype,
                         pool_instruction=config.embedding.pool_instruction,
                         bidirectional=config.embedding.bidirectional, limits=config.token_limits(),
                         tasks=tuple(config.task_names()))


def _absolute_backbone(serving: ServingConfig) -> ServingConfig:
    """Workers do not run in this directory (see `portable_spec`)."""
    from recfound.model.backbone import portable_spec

    return replace(serving, backbone=portable_spec(serving.backbone))


def _folder_files(folder: storage.Location, required: str = "tokenizer.json", kind: str = "tokenizer") -> dict[str, bytes]:
    """{name: bytes} of the files of `folder` (a tokenizer folder, or the `kind` folder holding `required`)."""
    if not storage.is_file(storage.join(folder, required)):
        raise FileNotFoundError(f"{folder}: not a {kind} folder (no {required})")
    return {name: storage.read_bytes(storage.join(folder, name)) for name in storage.list_names(folder)
            if storage.is_file(storage.join(folder, name))}


def run_config(layout: RunLayout) -> RunConfig:
    """The settings a run folder (local or on an object store) was trained with, from its config.yaml."""
    from recfound.config import load_config

    if not storage.is_file(layout.config):
        raise FileNotFoundError(f"{layout.location}: not a training run folder (no {CONFIG_FILE})")
    return load_config(layout.config, check_paths=False)


def run_tokenizer(layout: RunLayout, config: RunConfig) -> str:
    """The tokenizer a run trained with: its own corpus tokenizer, else the configured one."""
    from recfound.data.tokenizer import resolve_tokenizer

    own = layout.tokenizer
    return own if storage.is_file(storage.join(own, "tokenizer.json")) else str(resolve_tokenizer(config.data.tokenizer))


def _registered_artifacts(tracking_uri: str, name: str, number: str, folder: Path) -> dict[str, Path]:
    """{artifact key: local path} of version `number` of registered model `name`, downloaded into `folder`, as
    its MLmodel file records them. A version whose files are gone, or that is no model recfound logged, is
    one error naming the version."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    from recfound.tracking.pyfunc import ADAPTER, SERVING, TOKENIZER
    from recfound.tracking.registry import download_registered_adapter

    where = f"registered model {name!r} version {number}"
    try:
        model_dir = download_registered_adapter(tracking_uri, name, number, folder)
    except MlflowException as err:
        details = [line.strip("# ") for line in str(err).splitlines()[1:] if line.strip("# ")] or [first_line(err)]
        gone = any("No such" in detail or "does not exist" in detail for detail in details)
        hint = ": its artifact store was moved or cleaned; register the model again from its run" if gone else ""
        raise FileNotFoundError(f"{where}: its files could not be downloaded ({'; '.join(details)}){hint}") from None
    try:
        pyfunc = Model.load(str(model_dir)).flavors.get("python_function", {})
    except Exception as err:  # noqa: BLE001 - a damaged MLmodel fails in many ways (YAML, types, keys)
        raise ValueError(f"{where}: its MLmodel file cannot be read ({type(err).__name__}): not a model recfound "
                         "logged") from None
    artifacts = {key: model_dir / info["path"] for key, info in pyfunc.get("artifacts", {}).items()}
    missing = [key for key in (ADAPTER, TOKENIZER, SERVING) if key not in artifacts]
    if missing:
        raise ValueError(f"{where}: not a model recfound logged (it has no {', '.join(missing)} artifact)")
    return artifacts
