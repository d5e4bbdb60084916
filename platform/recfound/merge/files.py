"""Merging adapter files: a run's checkpoints found by step (`recfound.run_layout`), headers checked
against the base, the result written whole as an adapter file whose header records the merge.

Every location may be a local path or an object-store URI. A run folder holds `adapter_init.safetensors`
(the adapter at step 0: the TIES base) and `checkpoint_<step>/` folders, each with `adapter.safetensors`
and `progress.json` (`{"step": <int>, ...}`); other files are ignored. Every checkpoint is read into
memory at once (adapters are small); the merge itself goes tensor by tensor.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import Tensor

from recfound import storage
from recfound.merge.ties import (changed_fraction, check_density, check_method, state_mismatch, ties_merge,
                                 trimmed_to_nothing)
from recfound.model.state import HEADER_KEY, INIT_KEY, read_adapter
from recfound.run_layout import ADAPTER_FILE, CHECKPOINT_PREFIX, INIT_FILE, MERGED_FILE, PROGRESS_FILE, RunLayout, \
    checkpoint_step

DEFAULT_LAST = 3
CHECKED_KEYS = ("base_fingerprint", "config", "tasks", "token_ids")


@dataclass(frozen=True)
class MergePlan:
    """What to merge: the base adapter file, the checkpoint adapter files (oldest first), the output file."""

    base: str
    checkpoints: tuple[str, ...]
    out: str


def plan_run(run_dir: storage.Location, base: storage.Location | None = None, out: storage.Location | None = None,
             last: int = DEFAULT_LAST) -> MergePlan:
    """The last `last` checkpoints of a run by step, onto the run's adapter_init.safetensors (or `base`),
    into the run's merged.safetensors (or `out`)."""
    if last < 1:
        raise ValueError(f"the number of checkpoints to merge must be >= 1, got {last}")
    layout = RunLayout(run_dir)
    if not storage.is_dir(layout.location):
        raise FileNotFoundError(f"{layout.location}: no such run folder")
    checkpoints = layout.checkpoints()
    if not checkpoints:
        raise FileNotFoundError(f"{layout.location}: no complete {CHECKPOINT_PREFIX}* folders, so nothing to merge: "
                                "train a run (recfound train writes its checkpoints into <run.output_dir>/<run.name>), "
                                "or name checkpoint folders or adapter files (with --base and --out outside a run "
                                "folder)")
    if len(checkpoints) < last:
        print(f"warning: {layout.location} has {len(checkpoints)} complete checkpoint(s), fewer than the last {last} "
              "asked for: merging those", flush=True)
    files = [checkpoint.adapter for checkpoint in checkpoints[-last:]]
    return _checked_plan(layout.init_adapter if base is None else base, files, layout.merged if out is None else out)


def plan_merge(inputs: Sequence[storage.Location], base: storage.Location | None = None,
               out: storage.Location | None = None, last: int | None = None) -> MergePlan:
    """Resolve what the `recfound merge` command was given: one run folder (see `plan_run`; `last`
    defaults to 3), or checkpoint folders and adapter files; for those, `base` and `out` default to
    the files of the one run folder they all sit in."""
    locations = [str(location) for location in inputs]
    if not locations:
        raise ValueError("nothing to merge: give a run folder or checkpoint folders")
    if not all(location.strip() for location in locations):
        raise ValueError("nothing to merge: give a run folder or checkpoint folders (an empty path was given)")
    files = [_adapter_file(location) for location in locations]
    runs = [location for location, file in zip(locations, files) if file is None]
    if runs:
        if len(locations) > 1:
            raise ValueError(f"{runs[0]}: a run folder is merged on its own; to merge chosen checkpoints, "
                             "give their checkpoint folders")
        return plan_run(runs[0], base, out, DEFAULT_LAST if last is None else last)
    if last is not None:
        raise ValueError("the number of checkpoints to merge applies to a run folder only")
    run_dir = _common_run(files)
    if run_dir is None and (base is None or out is None):
        raise ValueError("the checkpoints do not all sit in one run folder with an "
                         f"{INIT_FILE}: give the base adapter (--base) and the output file (--out)")
    return _checked_plan(storage.join(run_dir, INIT_FILE) if base is None else base, files,
                         storage.join(run_dir, MERGED_FILE) if out is None else out)


def _is_merged_adapter(path: str) -> bool:
    try:
        header, _ = read_adapter(path, with_tensors=False)
    except ValueError:  # not an adapter at all
        return False
    return "merge" in header


def _adapter_file(location: str) -> str | None:
    """The adapter file `location` stands for (itself, or a checkpoint folder's); None for a run folder."""
    if storage.is_file(location):
        return location
    if not storage.is_dir(location):
        raise FileNotFoundError(f"{location}: no such file or folder")
    if storage.is_file(storage.join(location, ADAPTER_FILE)):
        return storage.join(location, ADAPTER_FILE)
    if storage.basename(location).startswith(CHECKPOINT_PREFIX):
        raise FileNotFoundError(f"{location}: checkpoint folder without {ADAPTER_FILE}")
    return None


def _common_run(files: Sequence[str]) -> str | None:
    """The run folder all `files` sit in (as <run>/<checkpoint>/<file>) if it has an init adapter, else None."""
    runs = {storage.normalize(storage.parent(storage.parent(file))) for file in files}
    run_dir = runs.pop() if len(runs) == 1 else None
    return run_dir if run_dir is not None and storage.is_file(storage.join(run_dir, INIT_FILE)) else None


def _checked_plan(base: storage.Location, checkpoints: Sequence[str], out: storage.Location) -> MergePlan:
    """A plan whose output is none of its inputs, nor any file but an earlier merge's, and whose
    checkpoints are each given once."""
    base, out = str(base), str(out)
    for flag, path in (("--base", base), ("--out", out)):
        if not path.strip():
            raise ValueError(f"{flag}: an empty path; give a file name")
    given = [storage.normalize(location) for location in checkpoints]
    twice = sorted({location for location in given if given.count(location) > 1})
    if twice:
        raise ValueError(f"{twice[0]}: given twice; each checkpoint is merged once")
    if storage.normalize(out) in {storage.normalize(base), *given}:
        raise ValueError(f"{out}: the output would overwrite one of the inputs; choose another output file")
    if storage.is_file(out) and not _is_merged_adapter(out):  # a checkpoint's adapter, config.yaml, the run's marker
        raise FileExistsError(f"{out}: exists and is not a merged adapter (only an earlier merge's output is "
                              "replaced); choose another --out")
    storage.refuse_folder(out)
    return MergePlan(base, tuple(checkpoints), out)


def merge_adapter_files(base: storage.Location, checkpoints: Sequence[storage.Location], out: storage.Location,
                        density: float = 0.8, method: str = "ties") -> str:
    """TIES-merge adapter files onto the base adapter file by `method` ("ties" or "authors", see
    `recfound.merge.ties`) and write `out` whole: the base's header plus a "merge" entry (method,
    density, base, sources with their steps, tensors, changed fraction). Every checkpoint must match
    the base's model, config, tasks and token rows."""
    from safetensors.torch import save

    check_density(density)
    check_method(method)
    base, out = str(base), str(out)
    base_header, base_state = read_adapter(base)
    states = [_read_matching(str(path), base, base_header, base_state) for path in checkpoints]
    merged = ties_merge(base_state, states, density, method)
    emptied = trimmed_to_nothing(base_state, density)
    if emptied:
        print(f"warning: density {density} keeps no entry of {len(emptied)} of the {len(base_state)} tensors (fewer "
              f"than 1 / density entries, e.g. {emptied[0]!r}): they stay the base's; raise the density (merge's "
              "--density, a run's merge.density) to merge them",
              flush=True)
    header = {**base_header, "merge": {
        "method": method, "density": density,
        "base": _relative(base, out),
        "sources": [{"file": _relative(str(path), out), "step": _source_step(str(path))} for path in checkpoints],
        "tensors": len(merged), "changed": changed_fraction(base_state, merged)}}
    storage.write_bytes(out, save(merged, metadata={HEADER_KEY: json.dumps(header)}))
    return out


def _read_matching(path: str, base: str, base_header: dict, base_state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of the adapter file `path`, refused unless its header and tensors fit the base's."""
    header, state = read_adapter(path)
    for key in CHECKED_KEYS:
        if header.get(key) != base_header.get(key):
            raise ValueError(f"{path}: {key} differs from the base {base}: {_difference(header, base_header, key)}")
    problem = state_mismatch(base_state, state)
    if problem:
        raise ValueError(f"{path}: {problem}")
    ours, theirs = header.get(INIT_KEY), base_header.get(INIT_KEY)
    if ours and theirs and ours != theirs:
        raise ValueError(f"{path}: trained from another initial adapter than the base {base} ({INIT_KEY} {ours} vs "
                         f"{theirs}): give the adapter_init.safetensors of the run that wrote it as --base")
    return state


def _difference(header: dict, base_header: dict, key: str) -> str:
    """What differs under `key` (per entry for the config)."""
    ours, theirs = header.get(key), base_header.get(key)
    if key == "config" and isinstance(ours, dict) and isinstance(theirs, dict):
        return "; ".join(f"{name}: file {ours.get(name)!r} vs base {theirs.get(name)!r}"
                         for name in sorted(ours.keys() | theirs.keys()) if ours.get(name) != theirs.get(name))
    return f"file {ours!r} vs base {theirs!r}"


def _source_step(file: str) -> int | None:
    """The step of an adapter file inside a checkpoint folder with progress.json, else None."""
    folder = storage.parent(file)
    return checkpoint_step(folder) if storage.is_file(storage.join(folder, PROGRESS_FILE)) else None


def _relative(location: str, out: str) -> str:
    """`location` relative to the output file's folder (what the merged file's header records); the whole
    location when the two are not on the same store."""
    if storage.is_remote(location) or storage.is_remote(out):
        here, there = storage.normalize(location), storage.normalize(out)
        if here.split("/")[:3] != there.split("/")[:3]:  # another scheme or bucket
            return here
        return posixpath.relpath(here.split("://", 1)[1], posixpath.dirname(there.split("://", 1)[1]))
    return Path(os.path.relpath(Path(location).absolute(), Path(out).absolute().parent)).as_posix()


def merge_run(run_dir: storage.Location, out: storage.Location | None = None, last: int = DEFAULT_LAST,
              density: float = 0.8, method: str = "ties") -> str:
    """TIES-merge (by `method`) the last `last` checkpoints of a run onto its adapter_init.safetensors;
    `out` defaults to <run_dir>/merged.safetensors."""
    plan = plan_run(run_dir, out=out, last=last)
    return merge_adapter_files(plan.base, plan.checkpoints, plan.out, density, method)
