"""The pool cache (recfound.data.pool_cache): a task file tokenized once is read back with the same rows, and
anything that decides the rows (the file, in a folder or a bucket; the token limits; the tokenizer) or a
damaged cache file makes it tokenize again. (A training job reading its pools back: the sweep's resumed
trials and the resubmitted multi-node job, test_sweep_run and test_multinode.)"""

from __future__ import annotations

import json

import pytest

from recfound import storage
from recfound.data.pipeline import load_pools
from recfound.data.pool_cache import cache_folder, read_pool, write_pool
from recfound.data.tokenize import TokenLimits
from test_streams import Q2I, SA


def write_split(root, rows_by_task: dict[str, list[dict]]) -> None:
    (root / "train").mkdir(parents=True, exist_ok=True)
    for name, rows in rows_by_task.items():
        (root / "train" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def fetched(refs) -> dict[str, list[dict]]:
    return {task: ref.fetch().table.to_pylist() for task, ref in refs.items()}


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, ray_cluster):
    """test_streams' split (SA, Q2I), a tokenizer of its own, and the split's pools tokenized without a cache."""
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.tokenizer import build_corpus_tokenizer

    root = tmp_path_factory.mktemp("pool-cache") / "data"
    write_split(root, {"SA": SA, "Q2I": Q2I})
    tokenizer = str(build_corpus_tokenizer(corpus_texts(root), root.parent / "tokenizer", vocab_size=400))
    return tokenizer, fetched(load_pools(root, "train", tokenizer))


@pytest.fixture
def corpus(tokenized, tmp_path):
    """A copy of the split for one test (which may change it), its tokenizer and its pools without a cache."""
    write_split(tmp_path / "data", {"SA": SA, "Q2I": Q2I})
    return (tmp_path / "data", *tokenized)


def test_a_second_load_reads_the_same_pools_back_and_a_changed_file_limit_or_tokenizer_misses(
        corpus, tmp_path, ray_cluster):
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.tokenizer import build_corpus_tokenizer

    root, tokenizer, uncached = corpus
    cache = tmp_path / "cache"
    first = load_pools(root, "train", tokenizer, cache=cache)
    assert [ref.from_cache for ref in first.values()] == [False, False] and list(first) == list(uncached)
    assert len(list(cache.glob("*.arrow"))) == 2 and not list(cache.glob(".*"))  # no temporary file left
    second = load_pools(root, "train", tokenizer, cache=cache)
    assert [ref.from_cache for ref in second.values()] == [True, True]
    assert fetched(second) == fetched(first) == uncached
    assert [ref.fingerprint for ref in second.values()] == [ref.fingerprint for ref in first.values()]
    assert {task: len(ref) for task, ref in second.items()} == {"SA": len(SA), "Q2I": len(Q2I)}

    write_split(root, {"SA": SA[:-1]})  # one record less in one file: that pool only is tokenized again
    third = load_pools(root, "train", tokenizer, cache=cache)
    assert {task: ref.from_cache for task, ref in third.items()} == {"SA": False, "Q2I": True}
    assert [row["id"] for row in fetched(third)["SA"]] == [record["id"] for record in SA[:-1]]
    # Other token limits are other rows.
    limited = load_pools(root, "train", tokenizer, TokenLimits(max_prompt=40, max_response=2, max_text=5), cache=cache)
    assert [ref.from_cache for ref in limited.values()] == [False, False]
    assert all(len(row["response_ids"]) == 2 for row in fetched(limited)["SA"])
    assert limited["Q2I"].cut.records == len(Q2I)  # what was cut is known from the cached pools too
    again = load_pools(root, "train", tokenizer, TokenLimits(max_prompt=40, max_response=2, max_text=5), cache=cache)
    assert [(ref.from_cache, ref.cut) for ref in again.values()] == [(True, ref.cut) for ref in limited.values()]
    # Another tokenizer is other rows.
    other = build_corpus_tokenizer(corpus_texts(root), tmp_path / "other-tokenizer", vocab_size=300)
    assert [ref.from_cache for ref in load_pools(root, "train", str(other), cache=cache).values()] == [False, False]


def test_a_damaged_cache_file_is_deleted_and_the_pool_rebuilt_and_leftovers_go(corpus, tmp_path, ray_cluster):
    import os
    import time

    root, tokenizer, uncached = corpus
    cache = tmp_path / "cache"
    load_pools(root, "train", tokenizer, cache=cache)
    damaged, cut = sorted(cache.glob("*.arrow"))
    assert all(len(path.stem.split("-")[1]) == 64 for path in (damaged, cut))  # <key>-<sha256 of the bytes>
    umask = os.umask(0)
    os.umask(umask)
    assert damaged.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions: a shared cache reads it
    content = bytearray(damaged.read_bytes())
    content[-len(content) // 3] ^= 0x01  # one bit, wherever it lands (a string, an offset, a token id)
    damaged.write_bytes(bytes(content))
    cut.write_bytes(cut.read_bytes()[:100])  # cut off, as by a full disk
    for path in (damaged, cut):
        assert read_pool(cache, path.stem.split("-")[0]) is None and not path.exists()
    old, fresh = cache / ".killed-write.tmp", cache / ".running-write.tmp"  # a killed run's, a running one's
    unused = cache / f"{'0' * 64}-{'1' * 64}.arrow"  # a pool of older code, not read for 31 days
    for path in (old, fresh, unused):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    os.utime(unused, (time.time() - 31 * 24 * 3600,) * 2)
    again = load_pools(root, "train", tokenizer, cache=cache)
    assert [ref.from_cache for ref in again.values()] == [False, False] and fetched(again) == uncached
    assert not old.exists() and not unused.exists() and fresh.exists()
    kept = sorted(cache.glob("*.arrow"))
    for path in kept:
        os.utime(path, (time.time() - 29 * 24 * 3600,) * 2)
    assert all(ref.from_cache for ref in load_pools(root, "train", tokenizer, cache=cache).values())
    assert all(time.time() - path.stat().st_mtime < 3600 for path in kept)  # read now: kept another 30 days


def test_a_file_in_a_bucket_is_known_by_its_uri_size_and_time(corpus, object_store, tmp_path, ray_cluster):
    root, tokenizer, uncached = corpus
    bucket_root = f"{object_store}/pool-cache/data"
    storage.upload(root, bucket_root)
    cache = tmp_path / "cache"
    assert not any(ref.from_cache for ref in load_pools(bucket_root, "train", tokenizer, cache=cache).values())
    again = load_pools(bucket_root, "train", tokenizer, cache=cache)
    assert all(ref.from_cache for ref in again.values()) and fetched(again) == uncached
    storage.write_bytes(f"{bucket_root}/train/SA.jsonl", "".join(json.dumps(r) + "\n" for r in SA[1:]).encode())
    rewritten = load_pools(bucket_root, "train", tokenizer, cache=cache)
    assert {task: ref.from_cache for task, ref in rewritten.items()} == {"SA": False, "Q2I": True}
    assert len(rewritten["SA"]) == len(SA) - 1


def test_the_cache_can_be_turned_off_and_a_cache_that_cannot_be_written_is_one_line(
        monkeypatch, tmp_path, capsys):
    import pyarrow as pa

    monkeypatch.setenv("RECFOUND_CACHE", str(tmp_path / "home-cache"))
    assert cache_folder() == tmp_path / "home-cache" / "pools"
    monkeypatch.setenv("RECFOUND_POOL_CACHE", "0")
    assert cache_folder() is None
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    write_pool(blocked, "key", pa.table({"position": [0, 1]}))
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"recfound: could not keep a token pool in {blocked} (") and line.endswith(
        "); the next run tokenizes again") and "\n" not in line
