"""Adapter state on disk: only the trainable tensors, as safetensors with a JSON header, and a dense
per-task export as a plain HF model folder.

The header names the adapter config, the task list, the trainable token ids and the base model (an id
for people, a fingerprint of the weights for the check), so an adapter is never loaded onto a base or
a config it was not trained for.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from recfound import storage
from recfound.data.atomic import atomic_folder
from recfound.model.adapter import Adapter, AdapterConfig
from recfound.task_file import task_entry, tasks_from_entries
from recfound.tasks import added_tasks, register_all

FORMAT = "recfound-adapter/1"
HEADER_KEY = "recfound"
INIT_KEY = "init_fingerprint"
DECLARED_TASKS = "declared_tasks"  # optional: files written before task files have none
HEADER_FIELDS = {"config": dict, "tasks": list, "token_ids": list, "base_id": str, "base_fingerprint": str}
_SAMPLES = 1024


def base_fingerprint(model: nn.Module) -> str:
    """A hash of every parameter's name, shape and ~1k evenly strided values rounded to bf16: cheap
    on a 7B model, and the same whether the base was loaded in fp32 or bf16."""
    return tensors_fingerprint(model.named_parameters())


def tensors_fingerprint(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """`base_fingerprint` of any named tensors (e.g. an adapter's initial trainable state)."""
    digest = hashlib.sha256()
    for name, param in named:
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // _SAMPLES)][:_SAMPLES]
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(sample.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def adapter_header(adapter: Adapter) -> dict:
    """What the file says about the adapter (and what loading checks)."""
    return {
        "format": FORMAT,
        "config": adapter.config.to_dict(),
        "tasks": list(adapter.tasks.names),
        "token_ids": adapter.token_rows.ids.tolist(),
        "base_id": adapter.base_id,
        "base_fingerprint": adapter.fingerprint,
        # The fingerprint of the initial adapter a training run started from: its init file and every checkpoint
        # carry it, so that a merge refuses a base from another run.
        **({INIT_KEY: adapter.init_id} if adapter.init_id else {}),
        # The definitions of its tasks beyond the 13 built-ins (task files): a process that loads the file
        # registers them, so a model trained on declared tasks is served or evaluated without their task file.
        DECLARED_TASKS: [task_entry(task) for task in added_tasks() if task.name in adapter.tasks.names],
    }


def save_adapter(adapter: Adapter, path: storage.Location,
                 tensors: Mapping[str, torch.Tensor] | None = None) -> storage.Location:
    """Write the trainable tensors (or `tensors`, the same names in another copy, e.g. an optimizer's
    fp32 master weights) and the header to `path` (.safetensors, a local path or URI), whole or not at all."""
    from safetensors.torch import save

    own = adapter.trainable_state()
    if tensors is not None and set(tensors) != set(own):
        raise ValueError(f"tensors to save do not name the adapter's trainable tensors: "
                         f"missing {sorted(set(own) - set(tensors))[:5]}, unexpected {sorted(set(tensors) - set(own))[:5]}")
    source = own if tensors is None else tensors
    tensors = {name: t.detach().cpu().contiguous() for name, t in source.items()}
    storage.write_bytes(path, save(tensors, metadata={HEADER_KEY: json.dumps(adapter_header(adapter))}))
    return path


def read_adapter(path: storage.Location, with_tensors: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header, tensors) of an adapter file (a local path or URI); a ValueError naming the file for anything
    else: not a safetensors file (e.g. truncated), no or a malformed recfound header, a non-finite tensor.
    Without `with_tensors`, the header alone (and no tensors: {})."""
    if not storage.is_file(path):
        raise FileNotFoundError(f"{path}: no such adapter file")
    if not storage.is_remote(path):
        return _read_adapter_file(Path(path), str(path), with_tensors)
    with tempfile.TemporaryDirectory(prefix="recfound-adapter-") as folder:
        return _read_adapter_file(storage.download(path, Path(folder) / storage.basename(path)), str(path),
                                  with_tensors)


def _read_adapter_file(local: Path, path: str, with_tensors: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """`read_adapter` of a local file; errors name `path`, where the file came from."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(local), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if HEADER_KEY not in metadata:
                raise ValueError(f"{path}: not a recfound adapter (no '{HEADER_KEY}' header)")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error}); it may be truncated: use another "
                         "checkpoint or train again") from None
    header = _parse_header(path, metadata[HEADER_KEY])
    register_all(tasks_from_entries(header.get(DECLARED_TASKS, []), f"{path}: header {DECLARED_TASKS}"))
    broken = [name for name, tensor in tensors.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise ValueError(f"{path}: {len(broken)} tensor(s) hold NaN or infinite values (e.g. {broken[0]}): the "
                         "run diverged by this checkpoint; use an earlier one")
    return header, tensors


def _parse_header(path: str, text: str) -> dict:
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{path}: the '{HEADER_KEY}' header is not valid JSON (or is nested too deeply)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the '{HEADER_KEY}' header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path}: adapter format {str(header.get('format'))[:40]!r}, expected {FORMAT!r}")
    wrong = [key for key, kind in HEADER_FIELDS.items() if not isinstance(header.get(key), kind)]
    if wrong:
        raise ValueError(f"{path}: the '{HEADER_KEY}' header lacks or mistypes {', '.join(wrong)}; it was not "
                         "written by recfound (or was edited)")
    return header


def load_adapter(adapter: Adapter, path: Path | str) -> None:
    """Load an adapter file into `adapter`, refusing a different base model, config, task list or token rows."""
    header, tensors = read_adapter(path)
    own = adapter_header(adapter)
    if header["base_fingerprint"] != own["base_fingerprint"]:
        raise ValueError(f"{path}: trained on base {header['base_id']!r} (fingerprint {header['base_fingerprint']}), "
                         f"but this model is {own['base_id']!r} (fingerprint {own['base_fingerprint']}); "
                         "with the same name, the base's weights differ (another seed, file or version of "
                         "the preset): load it as it was trained, or train the adapter again")
    # A key the file lacks was added to AdapterConfig after the file was written: its default is what it trained with.
    written = {**AdapterConfig().to_dict(), **header["config"]}
    changed = [f"{key}: file {written.get(key)!r} vs model {value!r}"
               for key, value in own["config"].items() if written.get(key) != value]
    if changed:
        raise ValueError(f"{path}: adapter config differs: {'; '.join(changed)}")
    for key in ("tasks", "token_ids"):
        if header[key] != own[key]:
            raise ValueError(f"{path}: {key} differ: file {header[key]} vs model {own[key]}")
    adapter.load_trainable_state(tensors)


EXPORT_MARKER = "recfound-export.json"  # what marks a folder as an export (only such a folder is ever replaced)


def export_dense(adapter: Adapter, task: str, out: Path | str, tokenizer_dir: Path | str | None = None) -> Path:
    """Write the dense model for `task` (`W0 + (alpha/r) sum_j v_j B_j A_j` per projection, token rows
    merged) as a HF folder that `AutoModelForCausalLM.from_pretrained` loads; the tokenizer files of
    `tokenizer_dir` are copied beside it when given. The folder appears whole or not at all; a task the
    adapter does not know is a KeyError that lists its tasks. An existing `out` is replaced only when it is
    empty or an earlier export (it holds EXPORT_MARKER)."""
    out = Path(out)
    adapter.task_id(task)
    with atomic_folder(out, EXPORT_MARKER) as staging:
        (staging / EXPORT_MARKER).write_text(json.dumps({"task": task}) + "\n", encoding="utf-8")
        with adapter.dense(task) as model:
            model.save_pretrained(str(staging))
        if tokenizer_dir is not None:
            for item in Path(tokenizer_dir).iterdir():
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
    return out
