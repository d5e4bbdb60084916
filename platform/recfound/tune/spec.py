"""A sweep definition (`sweeps/*.yaml`) read into a frozen `SweepSpec`, every key checked.

A sweep file names a base training config, overrides on it, an optional set of named variants,
a search space over dotted config paths, the metric, the search algorithm, the trial scheduler,
the number of trials and the resources of each trial (docs/sweeps.md has every key). Loading
only reads and checks: nothing starts. Every problem is a `recfound.config.ConfigError` that
names the file and the key, e.g.

    sweeps/s2sched.yaml: space.sched.windw: unknown config path (did you mean sched.window?)
    sweeps/s2sched.yaml: space.sched.window: empty range: low (64) must be < high (4)

The checks that need the training config (a value the config refuses, a combination such as
E + S + G = 0) are `check_trial_configs`, which `load_sweep` runs as its last step.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recfound import storage
from recfound.config import (CORPUS_TOKENIZER, PATHS, SEED, ConfigError, RunConfig, as_bool, as_float, as_int,
                             as_text, load_config, parse_overrides, read_yaml)
from recfound.data.tokenizer import SMOLLM2
from recfound.model.presets import PRESETS
from recfound.redact import without_passwords
from recfound.run_folder import NAME_MAX, NAME_PATTERN, NAME_RULE, RESERVED_NAMES

SEARCHES = ("optuna", "grid", "random")
SCHEDULERS = ("asha", "none")
METRICS = ("val_loss/mean", "val_loss/embedding", "val_loss/generative")  # in every report of a trial
MODES = ("min", "max")
RANGE_TYPES = ("uniform", "loguniform", "int")
VALUE_TYPES = ("choice", "grid")
RESERVED_PATHS = ("run.name", "mlflow.register_as")  # set per trial by the runner
SWEEP_NAME_MAX = NAME_MAX - 15  # a trial's run name adds "-" and Tune's trial id (8 hex digits, "_", 5 digits)
MAX_COMBINATIONS = 256  # above this, check_trial_configs checks the space one dimension at a time

KEYS = ("name", "description", "base", "overrides", "variants", "space", "metric", "mode", "search", "scheduler",
        "asha", "trials", "max_concurrent_trials", "resources", "storage", "seed")
RESOURCE_KEYS = ("workers", "cpus_per_worker", "gpus_per_worker", "trial_cpus")
ASHA_KEYS = ("grace_period", "reduction_factor")
DIMENSION_KEYS = {"uniform": ("low", "high"), "loguniform": ("low", "high"), "int": ("low", "high", "log"),
                  "choice": ("values",), "grid": ("values",)}
SCALAR = (str, bool, int, float, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched config value: a range (`uniform`, `loguniform`, `int`, bounds inclusive) or a list
    of values (`choice`: sampled, `grid`: every value tried)."""

    path: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    log: bool = False  # int only: sample on a log scale

    @property
    def is_range(self) -> bool:
        return self.type in RANGE_TYPES

    def candidates(self) -> tuple[Any, ...]:
        """The values checked against the config before a sweep starts: the bounds, or every value."""
        return (self.low, self.high) if self.is_range else self.values

    def describe(self) -> str:
        """e.g. 'loguniform(0.5, 20.0)', 'int(4, 64, log)', 'grid[s2sched, uniform]'."""
        if self.is_range:
            return f"{self.type}({self.low}, {self.high}{', log' if self.log else ''})"
        return f"{self.type}[{', '.join(_show(value) for value in self.values)}]"

    def to_dict(self) -> dict[str, Any]:
        if self.is_range:
            return {"type": self.type, "low": self.low, "high": self.high, **({"log": True} if self.log else {})}
        return {"type": self.type, "values": list(self.values)}


@dataclass(frozen=True)
class Resources:
    """What each trial reserves. None: the base config's value (train.num_workers, ...)."""

    workers: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: int | None = None  # 0 or 1: the training job gives each worker one GPU or none
    trial_cpus: float = 0.1  # the trial's own process (data, tracking, merge); its workers reserve their own

    def overrides(self) -> dict[str, Any]:
        """The training-config values these resources set."""
        values = {"train.num_workers": self.workers, "train.cpus_per_worker": self.cpus_per_worker,
                  "train.use_gpu": None if self.gpus_per_worker is None else bool(self.gpus_per_worker)}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep definition (see module doc); `base_config` is the base config with the
    sweep's overrides and resources applied, before any variant or searched value."""

    name: str
    source: str
    base: str | None
    base_config: RunConfig
    overrides: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    space: tuple[Dimension, ...] = ()
    metric: str = "val_loss/mean"
    mode: str = "min"
    search: str = "optuna"
    scheduler: str = "asha"
    grace_period: int | None = None  # ASHA; None: checkpoint.every (the first report)
    reduction_factor: float = 2.0
    trials: int = 1
    max_concurrent_trials: int = 1
    resources: Resources = field(default_factory=Resources)
    storage: str | None = None
    seed: int = 0
    description: str = ""
    # Resolved where the sweep was loaded (trials run in working folders of their own, maybe elsewhere):
    workdir: str = ""  # the folder relative paths are read from
    tracking_uri: str = ""  # the parent run's and every trial's: the base config's
    artifact_root: str | None = None

    def storage_path(self) -> Path:
        """Where Tune keeps the sweep (absolute): `storage`, else `<base run.output_dir>/sweeps`."""
        if self.storage is None and storage.is_remote(self.base_config.run.output_dir):
            raise ConfigError("storage", f"run.output_dir {self.base_config.run.output_dir} is on an object store; a "
                                         "sweep keeps Tune's state in a local folder: set the sweep's storage "
                                         "(e.g. storage: .cache/sweeps)")
        return (Path(self.workdir) / (self.storage or Path(self.base_config.run.output_dir) / "sweeps")).resolve()

    def experiment_dir(self) -> Path:
        """The sweep's own folder: Tune's experiment state, the trial table, the best config."""
        return self.storage_path() / self.name

    def grid_size(self) -> int:
        """How many trials one pass over the enumerated values (grid entries, variants) makes."""
        sizes = [len(d.values) for d in self.space if d.type == "grid" or (self.search == "grid" and not d.is_range)]
        if self.variants and self.search != "optuna":
            sizes.append(len(self.variants))
        return math.prod(sizes)

    def total_trials(self) -> int:
        """The number of trials the sweep runs: `trials` times the grid (Optuna: `trials`)."""
        return self.trials if self.search == "optuna" else self.trials * self.grid_size()

    def to_dict(self) -> dict[str, Any]:
        """The definition as plain data (what a resumed sweep must match, and what MLflow logs), with
        the passwords of URIs removed (`recfound.redact`)."""
        return without_passwords({"name": self.name, "description": self.description, "base": self.base,
                "overrides": self.overrides, "variants": self.variants,
                "space": {d.path: d.to_dict() for d in self.space}, "metric": self.metric, "mode": self.mode,
                "search": self.search, "scheduler": self.scheduler,
                "asha": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor},
                "trials": self.trials, "max_concurrent_trials": self.max_concurrent_trials,
                "resources": {key: getattr(self.resources, key) for key in RESOURCE_KEYS},
                "storage": self.storage, "seed": self.seed})

    def params(self) -> dict[str, Any]:
        """Flat MLflow params of the sweep's parent run (the space as text such as 'int(4, 64)')."""
        data = self.to_dict()
        params = {f"sweep.{key}": value for key, value in data.items()
                  if key not in ("overrides", "variants", "space", "asha", "resources", "description")}
        params.update({f"sweep.space.{d.path}": d.describe() for d in self.space})
        params.update({f"sweep.overrides.{key}": _json(value) for key, value in data["overrides"].items()})
        params.update({f"sweep.variants.{name}": _json(values) for name, values in data["variants"].items()})
        params.update({f"sweep.resources.{key}": value for key, value in data["resources"].items()})
        params.update({f"sweep.asha.{key}": value for key, value in data["asha"].items()})
        return params


# --- reading ----------------------------------------------------------------------------------------


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read and check the sweep file `path`, with `--set` items ("trials=4", "overrides.train.steps=10",
    "space.sched.window={type: int, low: 4, high: 32}") applied first; ConfigError naming the key."""
    source = str(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(reason=f"expected a mapping of sweep keys at the top level, got {_show(raw)}", source=source)
    raw = dict(raw)
    changes = parse_overrides(overrides)
    for key, value in changes.items():
        _set(raw, key, value)
    try:
        spec = _parse(raw, source)
        check_trial_configs(spec)
    except ConfigError as error:
        if error.source == source and any(_within(error.key, key) or _within(key, error.key) for key in changes):
            raise ConfigError(error.key, error.reason, "--set") from None  # the value came from --set, not the file
        raise
    return spec


def _within(key: str, prefix: str) -> bool:
    """`key` is the dotted key `prefix` or one inside it."""
    return key == prefix or key.startswith(prefix + ".")


def _variant_and_path(rest: str, variants: Mapping[str, Any]) -> tuple[str, str]:
    """(variant name, config path) of `variants.<rest>`. Names may hold dots ("w/o M.M."): a whole name first,
    then the longest name `rest` starts with, else up to the first dot (a new variant)."""
    if rest in variants:
        return rest, ""
    known = [str(name) for name in variants if rest.startswith(f"{name}.")]
    if known:
        name = max(known, key=len)
        return name, rest[len(name) + 1:]
    name, _, path = rest.partition(".")
    return name, path


def _set(raw: dict[str, Any], key: str, value: Any) -> None:
    """One `--set` item: a top-level key replaces it; `section.rest` sets `rest` inside that section
    (for overrides and space the rest is a dotted config path, for variants `name.path`)."""
    head, _, rest = key.partition(".")
    if head not in KEYS:
        raise _unknown(head, KEYS, "the sweep file has").sourced("--set")
    if not rest:
        raw[head] = value
        return
    section = raw.get(head) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(head, f"is not a mapping (got {_show(section)}), so {key} cannot be set", "--set")
    section = dict(section)
    if head == "variants":
        name, path = _variant_and_path(rest, section)
        variant = dict(section.get(name) or {})
        if path:
            variant[path] = value
        section[name] = variant if path else value
    else:
        section[rest] = value
    raw[head] = section


def _parse(raw: Mapping[str, Any], source: str) -> SweepSpec:
    """Every top-level key read and checked on its own; then the base config is built."""
    for key in raw:
        if key not in KEYS:
            raise _unknown(str(key), KEYS, "the sweep file has").sourced(source)
    try:
        return _build(raw, source)
    except ConfigError as error:
        raise error.sourced(source) from None


def _build(raw: Mapping[str, Any], source: str) -> SweepSpec:
    name = _get(raw, "name", as_text, required=True)
    if not re.fullmatch(NAME_PATTERN, name) or name in RESERVED_NAMES:
        raise ConfigError("name", f"must be a folder name: {NAME_RULE}, none of {', '.join(RESERVED_NAMES)} (it "
                                  f"names the trials' runs and folders); got {name[:NAME_MAX + 1]!r}")
    if len(name) > SWEEP_NAME_MAX:
        raise ConfigError("name", f"at most {SWEEP_NAME_MAX} characters: trial runs are named "
                                  f"<name>-<trial id> (up to {NAME_MAX}); got {len(name)}")
    search = _get(raw, "search", _one_of(SEARCHES), default="optuna")
    scheduler = _get(raw, "scheduler", _one_of(SCHEDULERS), default="asha")
    space = _space(raw.get("space"), search)
    variants = _variants(raw.get("variants"), source)
    if not space and not variants:
        raise ConfigError("space", "nothing to sweep: give a space (or variants)")
    trials = _get(raw, "trials", _positive_int, required=search != "grid", default=1)
    resources = _resources(raw.get("resources"))
    grace_period, reduction_factor = _asha(raw.get("asha"), scheduler)
    base_path = _get(raw, "base", as_text, default=None)
    base_overrides = _mapping(raw.get("overrides"), "overrides")
    base_config = _base_config(base_path, base_overrides, resources, source)
    workdir = os.getcwd()
    tracking_uri, artifact_root = _tracking(base_config, workdir)
    return SweepSpec(
        name=name, source=source, base=base_path, base_config=base_config, overrides=base_overrides,
        variants=variants, space=space, metric=_get(raw, "metric", _one_of(METRICS), default="val_loss/mean"),
        mode=_get(raw, "mode", _one_of(MODES), default="min"), search=search, scheduler=scheduler,
        grace_period=grace_period, reduction_factor=reduction_factor, trials=trials,
        max_concurrent_trials=_get(raw, "max_concurrent_trials", _positive_int, default=1), resources=resources,
        storage=_get(raw, "storage", _local_folder, default=None),
        seed=_get(raw, "seed", _seed, default=base_config.run.seed),
        description=_get(raw, "description", as_text, default=""), workdir=workdir, tracking_uri=tracking_uri,
        artifact_root=artifact_root)


def _base_config(path: str | None, overrides: Mapping[str, Any], resources: Resources, source: str) -> RunConfig:
    """The base file (or the defaults), then the sweep's overrides, then the resources."""
    if path is not None and not Path(path).is_file():
        raise ConfigError("base", f"no such config file: {path} (relative paths are read from the current folder)")
    config = load_config(path, check_paths=False)
    try:
        config = config.with_overrides(overrides, source=source)
    except ConfigError as error:
        raise ConfigError(f"overrides.{error.key}", error.reason) from None
    try:
        return config.with_overrides(resources.overrides(), source=source)
    except ConfigError as error:
        raise ConfigError("resources", f"{error.key}: {error.reason}") from None


def _tracking(config: RunConfig, workdir: str) -> tuple[str, str | None]:
    """The base config's tracking URI and artifact root, absolute (the embedded default: SQLite under
    run.output_dir; a relative artifact folder is read from `workdir`)."""
    config = absolute_paths(config, workdir)
    root = config.artifact_root()
    if root is not None and "://" not in root and not root.startswith("file:"):
        root = str((Path(workdir) / root).resolve())
    return config.tracking_uri(), root


def absolute_paths(config: RunConfig, workdir: str | Path) -> RunConfig:
    """`config` with run.output_dir, data.root, data.tasks_file and any tokenizer/backbone folder resolved against
    `workdir`."""
    def absolute(value: str) -> str:
        return value if storage.is_remote(value) else str((Path(workdir) / value).resolve())

    changes = {"run.output_dir": absolute(config.run.output_dir), "data.root": absolute(config.data.root)}
    if config.data.tasks_file is not None:
        changes["data.tasks_file"] = absolute(config.data.tasks_file)
    for key, value, names in (("data.tokenizer", config.data.tokenizer, (CORPUS_TOKENIZER, SMOLLM2)),
                              ("model.backbone", config.model.backbone, (*PRESETS, SMOLLM2))):
        if value not in names and Path(absolute(value)).exists():
            changes[key] = absolute(value)
    return config.with_overrides(changes)


# --- the parts ---------------------------------------------------------------------------------------


def _space(raw: Any, search: str) -> tuple[Dimension, ...]:
    dimensions = []
    for path, entry in _mapping(raw, "space").items():
        try:
            dimensions.append(_dimension(path, entry, search))
        except ConfigError as error:
            raise error.within(f"space.{path}") from None
    return tuple(dimensions)


def _dimension(path: str, entry: Any, search: str) -> Dimension:
    if path not in PATHS or not path:
        raise _unknown_path(path)
    if PATHS[path] is not None:
        keys = [key for key, section in PATHS.items() if key.startswith(path + ".") and section is None]
        raise ConfigError(reason=f"is a section; search its values one by one: {', '.join(keys)}")
    if path in RESERVED_PATHS:
        raise ConfigError(reason="is set by the sweep for every trial and cannot be searched")
    if not isinstance(entry, Mapping):
        raise ConfigError(reason="expected a mapping such as {type: uniform, low: 0.0, high: 0.3} or "
                                 f"{{type: choice, values: [16, 32]}}, got {_show(entry)}")
    kind = _get(entry, "type", _one_of((*RANGE_TYPES, *VALUE_TYPES)), required=True)
    for key in entry:
        if key != "type" and key not in DIMENSION_KEYS[kind]:
            raise ConfigError(str(key), f"unknown key for {kind} (it takes: {', '.join(DIMENSION_KEYS[kind])})")
    if kind in RANGE_TYPES:
        return _range(path, kind, entry, search)
    values = _get(entry, "values", _value_list, required=True)
    if search == "optuna":
        if kind == "grid":
            raise ConfigError("type", "grid values are enumerated, which Optuna's TPE does not do: use choice, "
                                      "or search: grid / random")
        if not all(isinstance(value, SCALAR) for value in values):
            raise ConfigError("values", "Optuna chooses among plain values (numbers, strings, true/false, null); "
                                        f"got {_show(list(values))}")
    return Dimension(path, kind, values=values)


def _range(path: str, kind: str, entry: Mapping[str, Any], search: str) -> Dimension:
    if search == "grid":
        raise ConfigError("type", f"search: grid enumerates values, and the {kind} range has none to enumerate: "
                                  "use choice/grid values, or search: optuna / random")
    number = as_int if kind == "int" else as_float
    low, high = _get(entry, "low", number, required=True), _get(entry, "high", number, required=True)
    if low >= high:
        raise ConfigError(reason=f"empty range: low ({low}) must be < high ({high})")
    log = _get(entry, "log", as_bool, default=False)
    if (kind == "loguniform" or log) and low <= 0:
        raise ConfigError("low", f"a log scale needs low > 0 (got {low})")
    return Dimension(path, kind, low=low, high=high, log=log)


def _variants(raw: Any, source: str) -> dict[str, dict[str, Any]]:
    variants = {}
    for name, overrides in _mapping(raw, "variants").items():
        variants[name] = _mapping(overrides, f"variants.{name}")
        for path in variants[name]:
            if path in RESERVED_PATHS:
                raise ConfigError(f"variants.{name}.{path}", "is set by the sweep for every trial")
    if raw is not None and not variants:
        raise ConfigError("variants", "must name at least one variant (or leave the key out)")
    return variants


def _resources(raw: Any) -> Resources:
    entry = _mapping(raw, "resources")
    for key in entry:
        if key not in RESOURCE_KEYS:
            raise _unknown(key, RESOURCE_KEYS, "resources has").within("resources")
    try:
        gpus = _get(entry, "gpus_per_worker", _non_negative_int, default=None)
        if gpus not in (None, 0, 1):
            raise ConfigError("gpus_per_worker", f"must be 0 or 1: a training worker uses one GPU or none "
                                                 f"(got {gpus}); more GPUs per trial means more workers")
        return Resources(workers=_get(entry, "workers", _positive_int, default=None),
                         cpus_per_worker=_get(entry, "cpus_per_worker", _positive_number, default=None),
                         gpus_per_worker=gpus, trial_cpus=_get(entry, "trial_cpus", _positive_number, default=0.1))
    except ConfigError as error:
        raise error.within("resources") from None


def _asha(raw: Any, scheduler: str) -> tuple[int | None, float]:
    entry = _mapping(raw, "asha")
    if entry and scheduler != "asha":
        raise ConfigError("asha", f"options given, but scheduler is {scheduler}")
    for key in entry:
        if key not in ASHA_KEYS:
            raise _unknown(key, ASHA_KEYS, "asha has").within("asha")
    try:
        factor = _get(entry, "reduction_factor", as_float, default=2.0)
        if factor <= 1:
            raise ConfigError("reduction_factor", f"must be > 1 (got {factor})")
        return _get(entry, "grace_period", _positive_int, default=None), factor
    except ConfigError as error:
        raise error.within("asha") from None


# --- the configs the trials will run (the last step of load_sweep) -----------------------------------


def check_trial_configs(spec: SweepSpec) -> None:
    """Build the configs the sweep can produce (every variant; each searched value alone: range bounds,
    every listed value; and all their combinations when there are at most MAX_COMBINATIONS) and raise a
    ConfigError naming the sweep key of the first one a trial could not run."""
    try:
        for variant in list(spec.variants) or [None]:
            base = _variant_config(spec, variant)
            try:
                check_sweepable(spec, base)
            except ConfigError as error:
                if error.key.startswith("asha."):
                    raise
                raise error.within("overrides" if variant is None else f"variants.{variant}") from None
            for dimension in spec.space:
                for value in dimension.candidates():
                    _check_values(spec, base, {dimension.path: value}, f"space.{dimension.path}", variant)
            for combination in _combinations(spec):
                _check_values(spec, base, combination, "space", variant)
    except ConfigError as error:
        raise error.sourced(spec.source) from None


def check_sweepable(spec: SweepSpec, config: RunConfig) -> None:
    """What a trial needs beyond a valid training config: a validation loss in every checkpoint report
    (the metric Tune and ASHA read), and ASHA's first rung before the last step."""
    steps, every, interval = config.train.steps, config.checkpoint.every, config.sched.eval_interval
    if interval > min(every, steps):
        raise ConfigError("sched.eval_interval", f"must be <= checkpoint.every ({every}) in a sweep: every "
                                                 f"checkpoint reports a validation loss to Tune (got {interval})")
    if spec.scheduler == "asha":
        last, grace = last_checkpoint_before_end(config), spec.grace_period or every
        if last == 0:
            raise ConfigError("checkpoint.every", f"must be < train.steps ({steps}) under ASHA, which stops trials "
                                                  f"at checkpoints before the last step (got {every})")
        if grace > last:
            key = "asha.grace_period" if spec.grace_period else "checkpoint.every"
            default = "" if spec.grace_period else ", ASHA's default grace period,"
            raise ConfigError(key, f"{grace}{default} must be <= {last}, the last checkpoint before the last "
                                   f"step ({steps}): ASHA stops trials only there")


def last_checkpoint_before_end(config: RunConfig) -> int:
    """The step of the last checkpoint before `train.steps` (0: none)."""
    return (config.train.steps - 1) // config.checkpoint.every * config.checkpoint.every


def _variant_config(spec: SweepSpec, variant: str | None) -> RunConfig:
    if variant is None:
        return spec.base_config
    try:
        return spec.base_config.with_overrides(spec.variants[variant])
    except ConfigError as error:
        raise ConfigError(f"variants.{variant}.{error.key}", error.reason) from None


def _combinations(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """Every combination of the dimensions' candidate values (none when too many, or only one dimension)."""
    candidates = [dimension.candidates() for dimension in spec.space]
    if len(candidates) < 2 or math.prod(len(values) for values in candidates) > MAX_COMBINATIONS:
        return
    paths = [dimension.path for dimension in spec.space]
    for values in itertools.product(*candidates):
        yield dict(zip(paths, values))


def _check_values(spec: SweepSpec, base: RunConfig, values: Mapping[str, Any], key: str,
                  variant: str | None) -> None:
    where = f" in variant {variant!r}" if variant is not None else ""
    shown = ", ".join(f"{path}={_plain(value)}" for path, value in values.items())
    try:
        check_sweepable(spec, base.with_overrides(values))
    except ConfigError as error:
        raise ConfigError(key, f"{shown}{where} gives a config a trial cannot run: {_inner(error)}") from None


def _inner(error: ConfigError) -> str:
    return f"{error.key}: {error.reason}" if error.key else error.reason


def _plain(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# --- value readers (each raises ConfigError(reason=...) for the key _get names) ----------------------------


def _get(entry: Mapping[str, Any], key: str, read: Callable[[Any], Any], required: bool = False,
         default: Any = None) -> Any:
    """`read(entry[key])`; `default` when the key is absent or null (an error when `required`)."""
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "is required")
        return default
    try:
        return read(value)
    except ConfigError as error:
        raise error.within(key) from None


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"expected a mapping, got {_show(value)}")
    return {str(name): item for name, item in value.items()}


def _one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    def read(value: Any) -> str:
        if value in choices:
            return value
        raise ConfigError(reason=f"must be one of {', '.join(choices)} (got {_show(value)})")
    return read


def _positive_int(value: Any) -> int:
    number = as_int(value)
    if number < 1:
        raise ConfigError(reason=f"must be >= 1 (got {number})")
    return number


def _non_negative_int(value: Any) -> int:
    number = as_int(value)
    if number < 0:
        raise ConfigError(reason=f"must be >= 0 (got {number})")
    return number


def _local_folder(value: Any) -> str:
    folder = as_text(value)
    try:
        remote = storage.is_remote(folder)
    except ValueError as error:  # another scheme, or "s3:/x" with one slash
        raise ConfigError(reason=str(error)) from None
    if remote:
        raise ConfigError(reason=f"must be a local folder: Tune keeps a sweep's state on the machine that runs it "
                                 f"(got {folder}); the trials' runs can still go to a bucket (run.output_dir)")
    return folder


def _seed(value: Any) -> int:
    number = as_int(value)
    if not SEED.test(number):
        raise ConfigError(reason=f"{SEED.text} (got {number})")
    return number


def _positive_number(value: Any) -> float:
    number = as_float(value)
    if number <= 0:
        raise ConfigError(reason=f"must be > 0 (got {number})")
    return number


def _value_list(value: Any) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(reason=f"expected a non-empty list of values, got {_show(value)}")
    seen = [_json(item) for item in value]
    if len(set(seen)) != len(seen):
        raise ConfigError(reason=f"names a value twice (got {_show(list(value))})")
    return tuple(value)


# --- messages ------------------------------------------------------------------------------------------


def _unknown(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1) or [name for name in known if name.startswith(key)][:1]
    hint = f"did you mean {close[0]}?" if close else f"{where}: {', '.join(known)}"
    return ConfigError(key, f"unknown key ({hint})")


def _unknown_path(path: str) -> ConfigError:
    values = [key for key, section in PATHS.items() if section is None]
    close = difflib.get_close_matches(path, values, n=1)
    hint = f" (did you mean {close[0]}?)" if close else "; every path is listed in docs/config.md"
    return ConfigError(reason=f"unknown config path{hint}")


def _show(value: Any) -> str:
    """A value as YAML writes it inline: null, 4, [1, 2], {shared: 0}."""
    if value is None:
        return "null"
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)
