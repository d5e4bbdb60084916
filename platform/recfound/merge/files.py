"""Merging adapter files: a run's checkpoints found by step, headers checked against the base, the
result written atomically as an adapter file whose header records the merge.

A run folder holds `adapter_init.safetensors` (the adapter at step 0: the TIES base) and
`checkpoint_*/` folders, each with `adapter.safetensors` and `progress.json` (`{"step": <int>, ...}`);
other files are ignored. Every checkpoint is read into memory at once (adapters are small); the
merge itself goes tensor by tensor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import Tensor

from recfound.data.atomic import atomic_write_bytes
from recfound.merge.ties import changed_fraction, check_density, state_mismatch, ties_merge
from recfound.model.state import HEADER_KEY, read_adapter

INIT_FILE = "adapter_init.safetensors"
ADAPTER_FILE = "adapter.safetensors"
PROGRESS_FILE = "progress.json"
MERGED_FILE = "merged.safetensors"
CHECKPOINT_GLOB = "checkpoint_*"
DEFAULT_LAST = 3
CHECKED_KEYS = ("base_fingerprint", "config", "tasks", "token_ids")


@dataclass(frozen=True)
class MergePlan:
    """What to merge: the base adapter file, the checkpoint adapter files (oldest first), the output file."""

    base: Path
    checkpoints: tuple[Path, ...]
    out: Path


def checkpoint_step(folder: Path | str) -> int:
    """The training step of a checkpoint folder, from its progress.json."""
    path = Path(folder) / PROGRESS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: checkpoint folder without {PROGRESS_FILE}")
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    step = progress.get("step") if isinstance(progress, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise ValueError(f"{path}: expected an integer 'step', got {step!r}")
    return step


def complete_checkpoints(run_dir: Path | str) -> list[Path]:
    """The complete checkpoint folders of a run (`recfound.train.manifest`), oldest step first; a
    warning line for each incomplete one."""
    from recfound.train.manifest import complete_checkpoints as complete

    folders = complete(sorted(path for path in Path(run_dir).glob(CHECKPOINT_GLOB) if path.is_dir()))
    return sorted(folders, key=lambda folder: (checkpoint_step(folder), folder.name))


def find_checkpoints(run_dir: Path | str) -> list[Path]:
    """The complete checkpoint folders of a run, oldest step first; an error when there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    folders = complete_checkpoints(run_dir)
    if not folders:
        raise FileNotFoundError(f"{run_dir}: no complete {CHECKPOINT_GLOB} folders, so nothing to merge: train a run "
                                "(recfound train writes its checkpoints into <run.output_dir>/<run.name>), or name "
                                "checkpoint folders or adapter files (with --base and --out outside a run folder)")
    return folders


def plan_run(run_dir: Path | str, base: Path | str | None = None, out: Path | str | None = None,
             last: int = DEFAULT_LAST) -> MergePlan:
    """The last `last` checkpoints of a run by step, onto the run's adapter_init.safetensors (or `base`),
    into the run's merged.safetensors (or `out`)."""
    if last < 1:
        raise ValueError(f"the number of checkpoints to merge must be >= 1, got {last}")
    run_dir = Path(run_dir)
    files = [folder / ADAPTER_FILE for folder in find_checkpoints(run_dir)[-last:]]
    return _checked_plan(base or run_dir / INIT_FILE, files, out or run_dir / MERGED_FILE)


def plan_merge(inputs: Sequence[Path | str], base: Path | str | None = None, out: Path | str | None = None,
               last: int | None = None) -> MergePlan:
    """Resolve what the `recfound merge` command was given: one run folder (see `plan_run`; `last`
    defaults to 3), or checkpoint folders and adapter files; for those, `base` and `out` default to
    the files of the one run folder they all sit in."""
    paths = [Path(path) for path in inputs]
    if not paths:
        raise ValueError("nothing to merge: give a run folder or checkpoint folders")
    files = [_adapter_file(path) for path in paths]
    runs = [path for path, file in zip(paths, files) if file is None]
    if runs:
        if len(paths) > 1:
            raise ValueError(f"{runs[0]}: a run folder is merged on its own; to merge chosen checkpoints, "
                             "give their checkpoint folders")
        return plan_run(runs[0], base, out, DEFAULT_LAST if last is None else last)
    if last is not None:
        raise ValueError("the number of checkpoints to merge applies to a run folder only")
    run_dir = _common_run(files)
    if run_dir is None and (base is None or out is None):
        raise ValueError("the checkpoints do not all sit in one run folder with an "
                         f"{INIT_FILE}: give the base adapter (--base) and the output file (--out)")
    return _checked_plan(base or run_dir / INIT_FILE, files, out or run_dir / MERGED_FILE)


def _adapter_file(path: Path) -> Path | None:
    """The adapter file `path` stands for (itself, or a checkpoint folder's); None for a run folder."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_file():
        return path
    if (path / ADAPTER_FILE).is_file():
        return path / ADAPTER_FILE
    if path.match(CHECKPOINT_GLOB):
        raise FileNotFoundError(f"{path}: checkpoint folder without {ADAPTER_FILE}")
    return None


def _common_run(files: Sequence[Path]) -> Path | None:
    """The run folder all `files` sit in (as <run>/<checkpoint>/<file>) if it has an init adapter, else None."""
    runs = {file.parent.parent.resolve(): file.parent.parent for file in files}
    run_dir = next(iter(runs.values())) if len(runs) == 1 else None
    return run_dir if run_dir is not None and (run_dir / INIT_FILE).is_file() else None


def _checked_plan(base: Path | str, checkpoints: Sequence[Path], out: Path | str) -> MergePlan:
    """A plan whose output is none of its inputs."""
    base, out = Path(base), Path(out)
    if out.resolve() in {path.resolve() for path in (base, *checkpoints)}:
        raise ValueError(f"{out}: the output would overwrite one of the inputs; choose another output file")
    return MergePlan(base, tuple(checkpoints), out)


def merge_adapter_files(base: Path | str, checkpoints: Sequence[Path | str], out: Path | str,
                        density: float = 0.8, trim_after_vote: bool = False) -> Path:
    """TIES-merge adapter files onto the base adapter file and write `out` atomically: the base's
    header plus a "merge" entry (method, density, trim_after_vote, base, sources with their steps,
    tensors, changed fraction). Every checkpoint must match the base's model, config, tasks and token rows."""
    from safetensors.torch import save

    check_density(density)
    base, out = Path(base), Path(out)
    base_header, base_state = read_adapter(base)
    states = [_read_matching(Path(path), base, base_header, base_state) for path in checkpoints]
    merged = ties_merge(base_state, states, density, trim_after_vote)
    header = {**base_header, "merge": {
        "method": "ties", "density": density, "trim_after_vote": trim_after_vote,
        "base": _relative(base, out),
        "sources": [{"file": _relative(Path(path), out), "step": _source_step(Path(path))} for path in checkpoints],
        "tensors": len(merged), "changed": changed_fraction(base_state, merged)}}
    atomic_write_bytes(out, save(merged, metadata={HEADER_KEY: json.dumps(header)}))
    return out


def _read_matching(path: Path, base: Path, base_header: dict, base_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of the adapter file `path`, refused unless its header and tensors fit the base's."""
    header, state = read_adapter(path)
    for key in CHECKED_KEYS:
        if header.get(key) != base_header.get(key):
            raise ValueError(f"{path}: {key} differs from the base {base}: {_difference(header, base_header, key)}")
    problem = state_mismatch(base_state, state)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return state


def _difference(header: dict, base_header: dict, key: str) -> str:
    """What differs under `key` (per entry for the config)."""
    ours, theirs = header.get(key), base_header.get(key)
    if key == "config" and isinstance(ours, dict) and isinstance(theirs, dict):
        return "; ".join(f"{name}: file {ours.get(name)!r} vs base {theirs.get(name)!r}"
                         for name in sorted(ours.keys() | theirs.keys()) if ours.get(name) != theirs.get(name))
    return f"file {ours!r} vs base {theirs!r}"


def _source_step(file: Path) -> int | None:
    """The step of an adapter file inside a checkpoint folder with progress.json, else None."""
    return checkpoint_step(file.parent) if (file.parent / PROGRESS_FILE).is_file() else None


def _relative(path: Path, out: Path) -> str:
    """`path` relative to the output file's folder (what the merged file's header records)."""
    return Path(os.path.relpath(path.absolute(), out.absolute().parent)).as_posix()


def merge_run(run_dir: Path | str, out: Path | str | None = None, last: int = DEFAULT_LAST, density: float = 0.8,
              trim_after_vote: bool = False) -> Path:
    """TIES-merge the last `last` checkpoints of a run onto its adapter_init.safetensors; `out` defaults
    to <run_dir>/merged.safetensors."""
    plan = plan_run(run_dir, out=out, last=last)
    return merge_adapter_files(plan.base, plan.checkpoints, plan.out, density, trim_after_vote)
