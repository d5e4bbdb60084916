"""Where everything of a run lives: the names inside a run folder and the one finder of its checkpoints.

A run folder is `run.output_dir/run.name`, a local path or an object-store URI (`recfound.storage`):

  config.yaml                       the run's settings (compared on resume)
  tokenizer/                        the corpus tokenizer trained for the run (when data.tokenizer is 'corpus')
  backbone/                         the preset pre-trained on the corpus for the run (model.pretrain_steps > 0)
  adapter_init.safetensors          the adapter at step 0 (the TIES base, the 'base' model of evaluations)
  checkpoint_<step>/                one per `checkpoint.every` steps, written by Ray Train:
      adapter.safetensors, progress.json, scheduler.json, zero/, manifest-rank<R>.json
  checkpoint_manager_snapshot.json  Ray Train's record of the checkpoints it registered
  merged.safetensors                the TIES merge of the last checkpoints
  ratios.png, routing.png           the S2Sched ratios and the routers' task similarity
  scheduler_history.json            every S2Sched point (losses, slopes, ratios)
  stopped.txt                       why the run stopped itself, when it did
  summary.txt                       the summary table, written last by a finished run
  .recfound-run                     the run's marker (`recfound.run_folder`)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from recfound import storage

CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
BACKBONE_DIR = "backbone"
INIT_FILE = "adapter_init.safetensors"
MERGED_FILE = "merged.safetensors"
RATIO_PLOT = "ratios.png"
ROUTING_PLOT = "routing.png"
HISTORY_FILE = "scheduler_history.json"
STOPPED_FILE = "stopped.txt"
SUMMARY_FILE = "summary.txt"
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
RECORD_TRACE_DIR = "record_trace"  # train.trace_records: rank<R>-<first step>-<last step>.jsonl

CHECKPOINT_PREFIX = "checkpoint_"
ADAPTER_FILE = "adapter.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
PROGRESS_FILE = "progress.json"
SCHEDULER_FILE = "scheduler.json"
ZERO_DIR = "zero"
MANIFEST_PREFIX = "manifest-rank"  # manifest-rank<R>.json, see recfound.train.manifest
HASHED_ON_USE = (ADAPTER_FILE, PROGRESS_FILE, SCHEDULER_FILE)  # the files a manifest records the SHA-256 of


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint of `step` (zero-padded: names sort by step)."""
    return f"{CHECKPOINT_PREFIX}{step:06d}"


def checkpoint_step(folder: storage.Location) -> int:
    """The training step of a checkpoint folder, from its progress.json."""
    path = storage.join(folder, PROGRESS_FILE)
    try:
        progress = json.loads(storage.read_text(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: checkpoint folder without {PROGRESS_FILE}") from None
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    step = progress.get("step") if isinstance(progress, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise ValueError(f"{path}: expected an integer 'step', got {step!r}")
    return step


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint folder of a run and its step."""

    location: str
    step: int

    @property
    def name(self) -> str:
        return storage.basename(self.location)

    @property
    def adapter(self) -> str:
        return storage.join(self.location, ADAPTER_FILE)


class RunLayout:
    """The locations of one run folder's files (local path or URI alike)."""

    def __init__(self, location: storage.Location) -> None:
        self.location = str(location)

    def __repr__(self) -> str:
        return f"RunLayout({self.location!r})"

    def file(self, name: str) -> str:
        return storage.join(self.location, name)

    @property
    def config(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def tokenizer(self) -> str:
        return self.file(TOKENIZER_DIR)

    @property
    def backbone(self) -> str:
        return self.file(BACKBONE_DIR)

    @property
    def init_adapter(self) -> str:
        return self.file(INIT_FILE)

    @property
    def merged(self) -> str:
        return self.file(MERGED_FILE)

    @property
    def stopped(self) -> str:
        return self.file(STOPPED_FILE)

    @property
    def summary(self) -> str:
        return self.file(SUMMARY_FILE)

    @property
    def snapshot(self) -> str:
        return self.file(SNAPSHOT_FILE)

    def checkpoint(self, name: str) -> str:
        return self.file(name)

    def record_trace(self, rank: int, first: int, last: int) -> str:
        """Where rank `rank` writes the pool rows of its steps `first`..`last` (`train.trace_records`)."""
        return storage.join(self.file(RECORD_TRACE_DIR), f"rank{rank}-{first:06d}-{last:06d}.jsonl")

    def checkpoint_folders(self) -> list[str]:
        """Every checkpoint folder, complete or not, by name."""
        return [self.file(name) for name in storage.list_names(self.location)
                if name.startswith(CHECKPOINT_PREFIX) and storage.is_dir(self.file(name))]

    def checkpoints(self) -> list[Checkpoint]:
        """The complete checkpoints (see `checkpoint_problem`), oldest step first; a warning line for each
        incomplete one."""
        found = []
        for folder in self.checkpoint_folders():
            problem = checkpoint_problem(folder)
            if problem is None:
                found.append(Checkpoint(folder, checkpoint_step(folder)))
            else:
                print(f"warning: skipping the incomplete checkpoint {folder}: {problem}", flush=True)
        return sorted(found, key=lambda checkpoint: (checkpoint.step, checkpoint.name))


def checkpoint_problem(folder: storage.Location) -> str | None:
    """Why `folder` (a local path or URI) is not a complete checkpoint (missing manifest, missing or changed
    file), or None."""
    sizes = storage.file_sizes(folder)
    manifests = _manifests(folder, sizes)
    if isinstance(manifests, str):
        return manifests
    for rank, manifest in sorted(manifests.items()):
        for name, expected in manifest["files"].items():
            if name not in sizes:
                return f"{name} (of rank {rank}) is missing"
            if sizes[name] != expected["size"]:
                return f"{name} has {sizes[name]} bytes, not the {expected['size']} written"
            if PurePosixPath(name).name in HASHED_ON_USE and \
                    hashlib.sha256(storage.read_bytes(storage.join(folder, name))).hexdigest() != expected["sha256"]:
                return f"{name} is not the file written (its SHA-256 differs)"
    return None


def _manifests(folder: storage.Location, sizes: dict[str, int]) -> dict[int, dict[str, Any]] | str:
    """Every rank's manifest by rank, or what is wrong with them."""
    found: dict[int, dict[str, Any]] = {}
    for name in sizes:
        if "/" in name or not name.startswith(MANIFEST_PREFIX) or not name.endswith(".json"):
            continue
        manifest = _read_manifest(storage.join(folder, name))
        if manifest is None:
            return f"{name} is unreadable (cut short?)"
        found[manifest["rank"]] = manifest
    if not found:
        return f"no {MANIFEST_PREFIX}*.json (the checkpoint was never completed, or predates manifests)"
    world_size = next(iter(found.values()))["world_size"]
    missing = sorted(set(range(world_size)) - set(found))
    return f"the manifests of rank(s) {', '.join(map(str, missing))} are missing" if missing else found


def _read_manifest(location: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads(storage.read_text(location))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    well_formed = (isinstance(manifest, dict) and isinstance(manifest.get("rank"), int)
                   and isinstance(manifest.get("world_size"), int) and isinstance(manifest.get("files"), dict)
                   and all(isinstance(entry, dict) and isinstance(entry.get("size"), int)
                           and isinstance(entry.get("sha256"), str) for entry in manifest["files"].values()))
    return manifest if well_formed else None
