"""A preset backbone pre-trained briefly as a causal LM on a corpus's texts, built once and cached.

A preset's random layers scramble what its token embeddings carry: mean-pooled, their features rank a
query's positive below its negatives, and InfoNCE then shrinks every similarity instead of sorting
them (docs/training.md, "Why the embedding branch collapsed"). About 150 steps of next-token
prediction on the corpus's own texts give the frozen layers something to adapt, as a real LLM's
pre-training does. Each text is one document of a shuffled stream (texts separated by EOS, cut into
fixed windows), so neighbouring texts are unrelated: a prompt is almost never followed by its answer, nor a
query by its positive, and the base model learns the corpus's language, not its tasks.

The result is an HF folder (config.json, model.safetensors, pretraining.json) in
`<cache>/backbones/<preset>-lm-<key>/`, the key hashing everything that decides the weights (preset,
tokenizer, texts, options), so a second run on the same corpus reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recfound.data.atomic import atomic_folder
from recfound.data.tokenizer import TokenizerInfo, default_cache_dir, load_tokenizer
from recfound.model.presets import PRESETS, build_preset, preset_config
from recfound.progress import Progress

FORMAT = 1  # bump when the procedure changes what a key's folder holds
MARKER = "pretraining.json"
SUMMARY_KEYS = ("first_loss", "last_loss", "tokens", "seconds")


def pretrains(model: Any) -> bool:
    """Whether a run with these model settings (`RunConfig.model`) trains on its preset pre-trained on the
    corpus: a preset backbone and `pretrain_steps` > 0 (other backbones are pre-trained already)."""
    return model.backbone in PRESETS and model.pretrain_steps > 0


@dataclass(frozen=True)
class PretrainOptions:
    """How a preset is pre-trained: `steps` AdamW steps of `batch` windows of `window` tokens."""

    steps: int = 150
    batch: int = 16
    window: int = 64
    lr: float = 1e-2
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.window < 2:
            raise ValueError(f"pre-training needs steps >= 1, batch >= 1 and window >= 2 (got {self.steps}, "
                             f"{self.batch}, {self.window})")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine down to `min_lr_ratio` (1-based `step`)."""
        warm = min(1.0, step / max(1, self.warmup_steps))
        cosine = 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        return self.lr * warm * (self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine)


def token_stream(texts: Iterable[str], tokenizer_dir: str | Path, seed: int) -> np.ndarray:
    """The texts tokenized, shuffled (seeded) and concatenated, each ending with EOS."""
    tokenizer, info = load_tokenizer(tokenizer_dir)
    rows = [encoding.ids + [info.eos_id] for encoding in tokenizer.encode_batch_fast(list(texts),
                                                                                      add_special_tokens=False)]
    order = np.random.default_rng([seed, 1]).permutation(len(rows))
    return np.fromiter((token for i in order for token in rows[i]), dtype=np.int64)


def pretrain_preset(name: str, tokenizer_dir: str | Path, stream: np.ndarray,
                    options: PretrainOptions = PretrainOptions(), label: str = "pre-training"
                    ) -> tuple[torch.nn.Module, list[float]]:
    """Train preset `name` (random weights from `options.seed`) on windows of `stream`; (model, the
    loss of every step). Progress lines go to stderr."""
    _, info = load_tokenizer(tokenizer_dir)
    if len(stream) <= options.window:
        raise ValueError(f"pre-training the {name} preset needs more than {options.window} tokens of text, the "
                         f"corpus's train texts hold {len(stream)}: add records, or set model.pretrain_steps=0")
    with one_thread():
        return _train(name, info, stream, options, label)


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: on a quiet 2-core machine a second thread saved a third of the
    time, beside other work two threads waiting on each other took 5x longer (docs/model.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _train(name: str, info: TokenizerInfo, stream: np.ndarray, options: PretrainOptions, label: str
           ) -> tuple[torch.nn.Module, list[float]]:
    model = build_preset(name, info.vocab_size, info.pad_id, info.eos_id, options.seed).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    rng = np.random.default_rng([options.seed, 2])
    tokens = torch.from_numpy(stream)
    losses: list[float] = []
    bar = Progress(options.steps, f"{label}: step", unit="tokens", interval=5.0)
    for step in range(1, options.steps + 1):
        starts = rng.integers(0, len(stream) - options.window, size=options.batch)
        batch = torch.stack([tokens[s: s + options.window] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = options.lr_at(step)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update(1, batch.numel(), f"loss {losses[-1]:.3f}")
    return model.eval(), losses


def pretrained_key(name: str, tokenizer_dir: str | Path, texts: list[str], options: PretrainOptions) -> str:
    """A hash of everything that decides the pre-trained weights (the token stream is a function of the
    texts, the tokenizer and the options: a cache hit never tokenizes the corpus)."""
    _, info = load_tokenizer(tokenizer_dir)
    digest = hashlib.sha256()
    config = preset_config(name, info.vocab_size, info.pad_id, info.eos_id).to_json_string(use_diff=False)
    digest.update(json.dumps([FORMAT, name, config, asdict(options)], sort_keys=True).encode())
    digest.update((Path(tokenizer_dir) / "tokenizer.json").read_bytes())
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()[:16]


def pretrained_preset(name: str, tokenizer_dir: str | Path, texts: Iterable[str],
                      options: PretrainOptions = PretrainOptions(), cache_dir: Path | None = None
                      ) -> tuple[Path, bool]:
    """(the folder of preset `name` pre-trained on `texts` with `tokenizer_dir`'s tokenizer, whether this
    call trained it): from the cache, else trained now (progress on stderr) and cached."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    texts = list(texts)
    key = pretrained_key(name, tokenizer_dir, texts, options)
    folder = (cache_dir or default_cache_dir()) / "backbones" / f"{name}-lm-{key}"
    with _held(folder.parent.parent / "locks" / f"{folder.name}.lock"):  # a second process waits, then reads it
        if (folder / MARKER).is_file():
            return folder, False
        started = time.perf_counter()
        stream = token_stream(texts, tokenizer_dir, options.seed)
        model, losses = pretrain_preset(name, tokenizer_dir, stream, options,
                                        label=f"pre-training the {name} backbone")
        with atomic_folder(folder, MARKER) as staging:
            model.save_pretrained(staging, safe_serialization=True)
            summary = {"format": FORMAT, "preset": name, "options": asdict(options), "tokens": int(len(stream)),
                       "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])),
                       "seconds": time.perf_counter() - started}
            (staging / MARKER).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return folder, True


@contextmanager
def _held(lock_file: Path) -> Iterator[None]:
    """An exclusive lock on `lock_file` (created if needed) for the block: processes building or reading the
    same cache folder (sweep trials, runs side by side) take turns."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretraining_summary(folder: Path) -> dict[str, Any]:
    """What a pre-trained folder's MARKER says (first and last loss, tokens, seconds); a clear error naming
    the file when it is not one of ours."""
    path = Path(folder) / MARKER
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict) or any(key not in summary for key in SUMMARY_KEYS):
            raise ValueError(f"not an object with {', '.join(SUMMARY_KEYS)}")
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a pre-training summary ({err}); delete {folder} and it is built again") from None
    return summary
