"""The registered model: a TMoLE/LoRA adapter served as an MLflow pyfunc.

Its artifacts are the adapter file (safetensors + header), the tokenizer folder and `serving.json`
(the backbone spec, seed and dtype, the embedding and length options the adapter was trained with, and the
tasks it was trained on), and for a run of a preset pre-trained on its corpus that backbone's folder (a few MB). Loading
rebuilds the frozen backbone (the carried folder; else a preset such as 'tiny' is re-created from its
seed; a HF folder or GGUF file must exist where the model is served), attaches the adapter and loads the
file, which checks the base model's fingerprint. Records are tokenized by the same functions as in
training (`recfound.data.tokenize`).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array

from recfound.data.records import INPUT_FIELDS, OPTIONAL_FIELDS, check_inputs, fields_of
from recfound.data.tokenize import TokenLimits
from recfound.data.tokenizer import load_tokenizer
from recfound.model.adapter import Adapter, AdapterConfig, TaskList
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.inference import Inference, InferenceOptions
from recfound.model.state import load_adapter, read_adapter
from recfound.tasks import Kind, get_task

ADAPTER, TOKENIZER, SERVING = "adapter", "tokenizer", "serving"  # artifact keys
BACKBONE = "backbone"  # artifact key of a backbone folder the model carries (a run's pre-trained preset)
MODEL_CODE = Path(__file__).with_name("model_code.py")  # models-from-code entry: no pickle in the model
DEFAULT_PARAMS = {"max_new_tokens": 32, "batch_size": 32}
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "task"), ColSpec("string", "instruction"),
                   ColSpec("string", "query", required=False), ColSpec("string", "input", required=False),
                   ColSpec(AnyType(), "options", required=False)]),  # a list, or missing in a mixed frame
    outputs=Schema([ColSpec("string", "task"), ColSpec(Array("double"), "embedding", required=False),
                    ColSpec("string", "text", required=False)]),
    params=ParamSchema([ParamSpec(name, "long", value) for name, value in DEFAULT_PARAMS.items()]),
)
# Object columns: a field a row lacks stays None (JSON null); pandas' string columns would hold NaN.
INPUT_EXAMPLE = pd.DataFrame([
    {"task": "Q2I", "instruction": "Represent the search for retrieving products.", "query": "red running shoes"},
    {"task": "SA", "instruction": "How does the reviewer feel?", "input": "Fits well, love it.",
     "options": ["positive", "neutral", "negative"]},
], dtype=object)


class ServingInputError(MlflowException, ValueError):
    """A request the model cannot answer (no or unknown task, a missing field): MLflow's scoring server
    answers it with HTTP 400 (INVALID_PARAMETER_VALUE) and no stack trace; its message is MLflow's
    "Failed to predict data '<the request>'." followed by a line `Error: ` with this message."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class ServingConfig:
    """What rebuilding the model needs besides the adapter file and the tokenizer (`serving.json`)."""

    backbone: str
    backbone_seed: int
    dtype: str = "float32"
    pool_instruction: bool = False  # as a run's default (`embedding.pool_instruction`)
    bidirectional: bool = False
    limits: TokenLimits = field(default_factory=TokenLimits)
    tasks: tuple[str, ...] | None = None  # what the run trained (None: a model logged before this was kept)

    def options(self) -> InferenceOptions:
        """The tokenization and pooling options inference with this model needs."""
        return InferenceOptions(limits=self.limits, pool_instruction=self.pool_instruction,
                                bidirectional=self.bidirectional)

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | Path) -> ServingConfig:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        tasks = values.get("tasks")
        return cls(**{**values, "limits": TokenLimits(**values["limits"]),
                      "tasks": None if tasks is None else tuple(tasks)})

    def check_trained(self, task: str) -> None:
        """Refuse a task the model was not trained on: its router and experts never saw it."""
        if self.tasks is not None and task not in self.tasks:
            raise ValueError(f"the model was not trained on task {task}; it was trained on {', '.join(self.tasks)}")


def load_served_adapter(adapter_file: str | Path, tokenizer_dir: str | Path, serving: ServingConfig) -> Adapter:
    """The backbone of `serving` with the adapter file loaded into it, in eval mode."""
    header, _ = read_adapter(adapter_file)
    _, info = load_tokenizer(tokenizer_dir)
    try:
        backbone = load_backbone(serving.backbone, info, dtype=serving.dtype, seed=serving.backbone_seed)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"the adapter was trained on backbone {serving.backbone!r}, which must be a "
                                f"preset or exist where the model is served: {err}") from err
    tasks = TaskList(tuple(header["tasks"]), tuple(get_task(name).kind for name in header["tasks"]))
    adapter = attach_adapter(backbone, AdapterConfig(**header["config"]), header["token_ids"], tasks)
    load_adapter(adapter, adapter_file)
    return adapter.eval()


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _record(raw: dict, row: int, serving: ServingConfig) -> dict:
    """A raw input row as a normalized record of its task (answers and documents left empty), refused as
    training would refuse its fields (`check_inputs`), and when the model was not trained on its task."""
    values = {key: value for key, value in raw.items() if _present(value)}
    if "task" not in values:
        raise ServingInputError(f"input row {row}: no task (each row names its task, e.g. 'Q2I' or 'SA')")
    try:
        task = get_task(str(values["task"]))
        serving.check_trained(task.name)
    except (KeyError, ValueError) as err:
        raise ServingInputError(f"input row {row}: {err.args[0]}") from None
    fields = INPUT_FIELDS[task.kind]
    missing = [name for name in fields if name not in OPTIONAL_FIELDS and name not in values]
    if missing:
        raise ServingInputError(f"input row {row} (task {task.name}): missing {', '.join(missing)}")
    given = {name: _listed(values[name]) for name in fields if name in values}
    problem = check_inputs(given, task)
    if problem:
        raise ServingInputError(f"input row {row} (task {task.name}): {problem.field}: {problem.message}")
    defaults = {name: [] if name in OPTIONAL_FIELDS else "" for name in fields_of(task)}
    return {"task": task.name, "id": str(row), **defaults, **given}


def _listed(value: Any) -> Any:
    """A JSON list as it reaches a pandas frame (a list, a tuple or a numpy array) as a list."""
    return list(value) if isinstance(value, (tuple, np.ndarray)) else value


def _positive_param(options: dict[str, Any], name: str) -> int:
    try:
        value = int(options[name])
    except (TypeError, ValueError):
        value = 0
    if value < 1 or value != options[name]:
        raise ServingInputError(f"param {name} must be a whole number >= 1, got {options[name]!r}")
    return value


class RecfoundAdapterModel(mlflow.pyfunc.PythonModel):
    """Input: records with a `task` column (embedding tasks: instruction + query; generative tasks:
    instruction + input, + options). Output: a DataFrame with `task`, `embedding` (the mean-pooled
    embedding, embedding tasks) and `text` (greedy generation, generative tasks), in input order.
    Params: `max_new_tokens` (32), `batch_size` (32)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        serving = ServingConfig.read(context.artifacts[SERVING])
        if BACKBONE in context.artifacts:  # carried inside the model: it loads wherever the model is served
            serving = replace(serving, backbone=context.artifacts[BACKBONE])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        adapter = load_served_adapter(context.artifacts[ADAPTER], context.artifacts[TOKENIZER], serving)
        self.serving = serving
        self.inference = Inference.of_adapter(adapter, context.artifacts[TOKENIZER], serving.options(), device)
        # MLflow's scoring server predicts each request in a thread of its own, and one call routes the shared
        # model to its tasks and sets its batch size: calls take turns.
        self.lock = threading.Lock()

    def predict(self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        options = {**DEFAULT_PARAMS, **(params or {})}
        batch_size, max_new_tokens = _positive_param(options, "batch_size"), _positive_param(options, "max_new_tokens")
        rows = model_input.to_dict("records") if isinstance(model_input, pd.DataFrame) else list(model_input)
        records = [_record(raw, row, self.serving) for row, raw in enumerate(rows)]
        with self.lock:
            outputs = self._answers(records, batch_size, max_new_tokens)
        # Object columns keep None as None (JSON null); a string column would turn it into NaN.
        return pd.DataFrame({"task": [r["task"] for r in records], **outputs}, dtype=object)

    def _answers(self, records: list[dict], batch_size: int, max_new_tokens: int) -> dict[str, list]:
        """{"embedding": [...], "text": [...]}, one entry per record (None where its kind has none)."""
        self.inference.options = replace(self.inference.options, batch_size=batch_size)
        outputs: dict[str, list] = {"embedding": [None] * len(records), "text": [None] * len(records)}
        for kind, column in ((Kind.EMBEDDING, "embedding"), (Kind.GENERATIVE, "text")):
            indices = [i for i, r in enumerate(records) if get_task(r["task"]).kind is kind]
            if not indices:
                continue
            chosen = [records[i] for i in indices]
            if kind is Kind.EMBEDDING:
                results = self.inference.embed_queries(chosen).astype(float).tolist()
            else:
                results = self.inference.generate(chosen, max_new_tokens)
            for i, result in zip(indices, results):
                outputs[column][i] = result
        return outputs
