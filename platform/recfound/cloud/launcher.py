"""A Ray cluster launcher YAML, read and validated as `ray up` does before it starts anything.

`ray up` has no dry run; Ray's own tests validate launcher configs with `prepare_config` (the
provider's defaults merged in, per-type worker limits filled) and `validate_config` (the JSON schema
`ray-schema.json` plus cross-field rules). Both are used here, and a schema error becomes one line
naming the file and the key.
"""

from __future__ import annotations

import copy
import difflib
import logging
from pathlib import Path
from typing import Any

from recfound.config import read_yaml


class LauncherError(ValueError):
    """A launcher config `ray up` would refuse (or one that cannot run the training job)."""


def _key_path(parts: Any) -> str:
    return ".".join(str(part) for part in parts) or "the top level"


def _schema_message(source: str, error: Any) -> str:
    """One line for a jsonschema ValidationError: the key it is about and what is wrong."""
    where = _key_path(error.absolute_path)
    if error.validator != "additionalProperties":
        return f"{source}: {where}: {error.message}"
    known = sorted(error.schema.get("properties", {}))
    unknown = sorted(set(error.instance) - set(known))
    hints = [difflib.get_close_matches(key, known, n=1) for key in unknown]
    said = ", ".join(f"{key!r}" + (f" (did you mean {hint[0]}?)" if hint else "") for key, hint in zip(unknown, hints))
    return f"{source}: {where}: unknown key {said}; Ray's launcher schema allows here: {', '.join(known)}"


def load_launcher_config(path: str | Path) -> dict[str, Any]:
    """The launcher config at `path` as `ray up` would run it (defaults filled); LauncherError naming the
    file and the key when Ray would refuse it."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config  # Ray 2.60 (pinned)

    source = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise LauncherError(f"{source}: expected a mapping of launcher settings, got {type(raw).__name__}")
    filler = logging.getLogger("ray.autoscaler._private.util")  # says each default it fills in, at INFO
    level = filler.level
    filler.setLevel(logging.WARNING)
    try:
        prepared = prepare_config(copy.deepcopy(raw))
        validate_config(prepared)
    except jsonschema.ValidationError as error:
        raise LauncherError(_schema_message(source, error)) from None
    except KeyError as error:  # prepare_config reads a few keys before the schema check runs
        raise LauncherError(f"{source}: missing required key {error.args[0]!r} (Ray's launcher schema; see "
                            "cluster.yaml for a complete config)") from None
    except (ValueError, AssertionError) as error:
        raise LauncherError(f"{source}: {error}") from None
    finally:
        filler.setLevel(level)
    if "min_workers" in raw:  # prepare_config drops it without a word
        raise LauncherError(f"{source}: min_workers: not a top-level key (Ray ignores it there); set min_workers "
                            "per node type under available_node_types")
    for name, node_type in prepared["available_node_types"].items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers")
        if high is not None and low > high:  # Ray would quietly keep only max_workers
            raise LauncherError(f"{source}: available_node_types.{name}.min_workers: {low} is more than its "
                                f"max_workers {high}")
    return prepared


def mounted_file_problems(config: dict[str, Any]) -> list[str]:
    """The local files the config mounts onto the nodes (`file_mounts`: remote path -> local path, `~` being
    this user's home) that do not exist on this machine, each as a line saying what to do."""
    problems = []
    for remote, local in sorted(config.get("file_mounts", {}).items()):
        found = Path(str(local)).expanduser()
        if not found.exists():
            problems.append(f"file_mounts: {remote!r} is copied from {found}, which does not exist here"
                            f"{_how_to_create(str(remote))}")
    return problems


def _how_to_create(remote: str) -> str:
    if remote.endswith("auth_token"):
        return ": create the cluster's Ray token there with `ray get-auth-token --generate` (docs/cloud.md, step 2)"
    if remote.endswith("mlflow.env"):
        return ": write the MLflow server's settings there (docs/cloud.md, step 2)"
    return ""
