"""A run's inputs before training: the corpus (generated when asked for and absent), its tokenizer, and
for a preset backbone the preset pre-trained on the corpus (`model.pretrain_steps`)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from recfound import storage
from recfound.config import RunConfig
from recfound.data.reader import SPLITS
from recfound.data.source_digest import source_digest
from recfound.run_layout import BACKBONE_DIR, RunLayout

TOKENIZER_FILE = "tokenizer.json"


CORPUS_STAMP = "synth.json"  # written last into a generated corpus: its scale, seed and generator


def prepare_corpus(config: RunConfig) -> str:
    """data.root (a local path or URI), with a corpus generated there first when data.synth_scale asks for
    one and it has no train/ split, or holds a corpus this code did not generate (another scale, an older
    generator; see `_stale_corpus`). Another seed reuses the corpus there: a sweep's trials share one."""
    from recfound.data.synth import synthesize

    root = storage.normalize(config.data.root)  # absolute: Ray Data's read tasks run elsewhere
    scale, generator = config.data.synth_scale, source_digest("synth*.py").hex()[:16]
    if storage.is_dir(storage.join(root, "train")):
        stale = _stale_corpus(root, scale, generator)
        if stale is None:
            return root
        print(f"\n== {root} holds {stale}: generating it again", flush=True)
        for name in (CORPUS_STAMP, *SPLITS):
            storage.delete(storage.join(root, name))
    elif scale is None:
        raise FileNotFoundError(f"data.root {root}: no train/ folder (set data.synth_scale to generate a corpus)")
    print(f"\n== generating the {scale} corpus (seed {config.run.seed}) into {root}", flush=True)
    started = time.perf_counter()
    if storage.is_remote(root):
        with tempfile.TemporaryDirectory(prefix="recfound-corpus-") as folder:
            synthesize(Path(folder), config.run.seed, scale)
            storage.upload(folder, root, last="train")  # train/ is what marks a corpus there
    else:
        synthesize(Path(root), config.run.seed, scale)
    stamp = {"scale": scale, "seed": config.run.seed, "generator": generator}
    storage.write_bytes(storage.join(root, CORPUS_STAMP), json.dumps(stamp).encode())
    print(f"done in {time.perf_counter() - started:.1f}s", flush=True)
    return root


def _stale_corpus(root: str, scale: str | None, generator: str) -> str | None:
    """What makes the corpus at `root` other than the one asked for, or None to use it as it is. A folder
    without a stamp is the user's own data, never touched, except the demo's default folder, which only
    recfound writes (a corpus from before the stamp, or a generation that was cut off)."""
    if scale is None:
        return None
    location = storage.join(root, CORPUS_STAMP)
    if not storage.is_file(location):
        default_root = storage.normalize(RunConfig().data.root)
        return "a corpus of an older recfound (no synth.json)" if root == default_root else None
    try:
        stamp = json.loads(storage.read_text(location))
    except ValueError:  # also a file that is not UTF-8
        stamp = None
    if not isinstance(stamp, dict):
        return f"an unreadable {CORPUS_STAMP}"
    if stamp.get("scale") != scale:
        return f"the {stamp.get('scale')} corpus, not the {scale} one"
    if stamp.get("generator") != generator:
        return "a corpus of another version of the generator"
    return None


def prepare_tokenizer(config: RunConfig, root: str, layout: RunLayout, staging: Path,
                      resuming: bool = False) -> tuple[Path, str]:
    """(local tokenizer folder, its location for the workers). A 'corpus' tokenizer is trained on the
    corpus into the run folder (a resumed run keeps the one it trained with); a named one is resolved
    (and, for a run folder on a bucket, copied into it, where every worker finds it)."""
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.tokenizer import build_corpus_tokenizer, resolve_tokenizer

    remote = storage.is_remote(layout.location)
    if config.data.tokenizer != "corpus":
        local = Path(resolve_tokenizer(config.data.tokenizer)).resolve()
        if not remote:
            return local, str(local)
        # A named tokenizer's folder (a cache folder, for smollm2) is on this machine only: the workers,
        # on any node, read the run's copy.
        storage.upload(local, layout.tokenizer, last=TOKENIZER_FILE)
        return local, layout.tokenizer
    local = staging / Path(storage.basename(layout.tokenizer))
    if resuming and not (local / TOKENIZER_FILE).is_file() and remote \
            and storage.is_file(storage.join(layout.tokenizer, TOKENIZER_FILE)):
        storage.download(layout.tokenizer, local)
    if not (resuming and (local / TOKENIZER_FILE).is_file()):
        build_corpus_tokenizer(corpus_texts(root), local, vocab_size=config.data.corpus_vocab)
        if remote:
            storage.upload(local, layout.tokenizer, last=TOKENIZER_FILE)  # what marks the folder complete
    return local, layout.tokenizer if remote else str(local.resolve())


def prepare_backbone(config: RunConfig, root: str, tokenizer: Path, layout: RunLayout, staging: Path,
                     resuming: bool = False) -> str:
    """The backbone the run trains on: `model.backbone` itself, or, for a preset with model.pretrain_steps
    > 0, the run's `backbone/` folder (its location for the workers: an absolute path or a URI) holding the
    preset pre-trained on the corpus's train texts, copied from the cache or trained now (a resumed run
    keeps the one it trained with)."""
    from recfound.model.pretrain import MARKER, PretrainOptions, pretrained_preset, pretraining_summary, pretrains

    if not pretrains(config.model):
        return config.model.backbone
    from recfound.data.atomic import atomic_folder
    from recfound.data.corpus_text import corpus_texts

    remote = storage.is_remote(layout.location)
    location = layout.backbone if remote else str(Path(layout.backbone).resolve())
    if resuming and storage.is_file(storage.join(layout.backbone, MARKER)):
        return location
    options = PretrainOptions(steps=config.model.pretrain_steps)
    print(f"\n== backbone: the {config.model.backbone} preset pre-trained on the corpus ({options.steps} steps "
          "of next-token prediction, cached)", flush=True)
    cached, built = pretrained_preset(config.model.backbone, tokenizer, corpus_texts(root), options)
    summary = pretraining_summary(cached)
    how = f"built in {summary['seconds']:.0f}s" if built else "from the cache"
    print(f"{cached}: next-token loss {summary['first_loss']:.2f} -> {summary['last_loss']:.2f} on "
          f"{summary['tokens']:,} tokens of text ({how})", flush=True)
    local = staging / BACKBONE_DIR
    with atomic_folder(local, MARKER) as copy:
        for item in cached.iterdir():
            shutil.copy2(item, copy / item.name)
    if remote:
        storage.upload(local, layout.backbone, last=MARKER)
    return location


def data_hash(pools: dict[str, dict[str, Any]], tokenizer: Path) -> str:
    """A short hash of the tokenized train and validation records (their pools' fingerprints) and the
    tokenizer a run used."""
    digest = hashlib.sha256()
    for split in sorted(pools):
        for task in sorted(pools[split]):
            digest.update(f"{split}/{task}:{pools[split][task].fingerprint};".encode())
    for item in sorted(Path(tokenizer).glob("*.json")):
        digest.update(item.read_bytes())
    return digest.hexdigest()[:16]
