"""Tokenization through Ray Data streams, token pools, collation, and the offline tokenizers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recfound.data.collate import IGNORE_INDEX, collate_embedding, collate_generative
from recfound.data.corpus_text import corpus_texts
from recfound.data.cuts import CutCounts, cut_warnings
from recfound.data.prompts import embedding_instruction, generative_pieces, generative_prompt, generative_response
from recfound.data.pools import materialize_pools
from recfound.data.streams import open_streams
from recfound.data.tokenize import Cut, TokenLimits, fitted_prompt
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer, resolve_tokenizer
from recfound.tasks import task_index

SA = [{"id": f"sa{i}", "instruction": "How does the reviewer feel?", "input": f"Review {i}: " + "great " * (i + 1),
       "options": ["happy", "neutral", "unhappy"], "output": "A"} for i in range(6)]
Q2I = [{"id": f"q{i}", "instruction": "Embed this search.", "query": f"red shoe size {i}",
        "positive": f"Acme red shoe {i}", "negatives": [f"blue hat {j}" for j in range(i % 3)]} for i in range(5)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for name, rows in {"SA": SA, "Q2I": Q2I}.items():
        (root / "train").mkdir(exist_ok=True)
        (root / "train" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer_dir = build_corpus_tokenizer(corpus_texts(root), root / "tokenizer", vocab_size=400)
    return root, str(tokenizer_dir)


@pytest.fixture(scope="module")
def pool_refs(dataset, ray_cluster):
    root, tokenizer_dir = dataset
    return materialize_pools(open_streams(root, "train", tokenizer_dir))


@pytest.fixture(scope="module")
def pools(pool_refs):
    return {name: ref.fetch() for name, ref in pool_refs.items()}


def test_generative_rows_keep_prompt_and_response_apart(dataset, pools):
    tokenizer, info = load_tokenizer(dataset[1])
    rows = {r["id"]: r for r in pools["SA"].table.to_pylist()}
    assert len(rows) == len(SA)
    for record in SA:
        row = rows[record["id"]]
        assert tokenizer.decode(row["prompt_ids"]) == generative_prompt(record["instruction"], record["input"],
                                                                        record["options"])
        assert row["response_ids"][-1] == info.eos_id
        assert tokenizer.decode(row["response_ids"][:-1]) == generative_response(record["output"])


def test_embedding_rows_start_with_the_embed_token(dataset, pools):
    tokenizer, info = load_tokenizer(dataset[1])
    rows = {r["id"]: r for r in pools["Q2I"].table.to_pylist()}
    for record in Q2I:
        row = rows[record["id"]]
        instruction_ids = tokenizer.encode(embedding_instruction(record["instruction"]), add_special_tokens=False).ids
        assert row["query_ids"][0] == info.embed_id
        assert row["query_prefix_len"] == 1 + len(instruction_ids)
        assert tokenizer.decode(row["query_ids"][row["query_prefix_len"]:]) == record["query"]
        assert row["positive_ids"][0] == info.embed_id
        assert tokenizer.decode(row["positive_ids"][1:]) == record["positive"]
        assert [tokenizer.decode(n[1:]) for n in row["negative_ids"]] == record["negatives"]


def test_limits_truncate_the_long_part_only(dataset, ray_cluster):
    root, tokenizer_dir = dataset
    tokenizer, _ = load_tokenizer(tokenizer_dir)
    limits = TokenLimits(max_prompt=40, max_response=2, max_text=5)
    pools = {name: ref.fetch() for name, ref in materialize_pools(open_streams(root, "train", tokenizer_dir,
                                                                                limits=limits)).items()}
    for row in pools["SA"].table.to_pylist():
        text = tokenizer.decode(row["prompt_ids"])
        assert len(row["prompt_ids"]) <= 40 and len(row["response_ids"]) == 2
        assert text.startswith("How does the reviewer feel?\n\nReview") and text.endswith("C: unhappy\n\nAnswer:")
    longest = pools["SA"].table.to_pylist()[-1]  # pools keep the file order
    assert longest["id"] == SA[-1]["id"] and SA[-1]["input"] not in tokenizer.decode(longest["prompt_ids"])
    for row in pools["Q2I"].table.to_pylist():
        assert max(len(row["query_ids"]), len(row["positive_ids"])) <= 5


def test_fit_prompt_cuts_body_then_head():
    head, body, tail = [1, 2, 3], [4, 5, 6, 7], [8, 9]
    assert fitted_prompt(head, body, tail, 100)[0] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert fitted_prompt(head, body, tail, 7)[0] == [1, 2, 3, 4, 5, 8, 9]
    assert fitted_prompt(head, body, tail, 4)[0] == [1, 2, 8, 9]
    assert fitted_prompt(head, body, tail, 1)[0] == [9]


def test_prompt_cut_says_what_fit_prompt_left_out():
    head, body, tail = [1, 2, 3], [4, 5, 6, 7], [8, 9]
    for limit in range(1, 12):
        kept = fitted_prompt(head, body, tail, limit)[0]
        body_whole = all(token in kept for token in body)
        frame_whole = kept[:3] == head and kept[-2:] == tail
        expected = (Cut(0) if body_whole else Cut.TEXT) | (Cut(0) if frame_whole else Cut.FRAME)
        assert fitted_prompt(head, body, tail, limit)[1] == expected, limit
    assert fitted_prompt(head, [], tail, 4)[1] == Cut.FRAME  # nothing to cut but the frame


def expected_cuts(row: dict, record: dict, tokenizer) -> Cut:
    """The flags a row should carry, read off its decoded tokens against the record's whole texts."""
    if "prompt_ids" in row:
        instruction, body, tail = generative_pieces(record["instruction"], record["input"], record.get("options"))
        prompt = tokenizer.decode(row["prompt_ids"])
        flags = Cut(0) if body.strip() in prompt else Cut.TEXT
        if not (prompt.startswith(instruction.strip()) and prompt.endswith(tail.strip())):
            flags |= Cut.FRAME
        if tokenizer.decode(row["response_ids"][:-1]) != generative_response(record["output"]):
            flags |= Cut.RESPONSE
        return flags
    prefix = row["query_prefix_len"]
    flags = Cut(0) if tokenizer.decode(row["query_ids"][prefix:]) == record["query"] else Cut.TEXT
    if tokenizer.decode(row["query_ids"][1:prefix]).strip() != embedding_instruction(record["instruction"]).strip():
        flags |= Cut.FRAME
    documents = [row["positive_ids"], *row["negative_ids"]]
    if [tokenizer.decode(ids[1:]) for ids in documents] != [record["positive"], *record["negatives"]]:
        flags |= Cut.DOCUMENT
    return flags


def test_every_row_says_what_the_limits_cut_and_the_pools_count_it(dataset, ray_cluster):
    root, tokenizer_dir = dataset
    tokenizer, _ = load_tokenizer(tokenizer_dir)
    records = {record["id"]: record for record in SA + Q2I}
    for limits in (TokenLimits(), TokenLimits(max_prompt=24, max_response=2, max_text=8),
                   TokenLimits(max_prompt=6, max_text=3)):
        refs = materialize_pools(open_streams(root, "train", tokenizer_dir, limits=limits))
        for task, ref in refs.items():
            rows = ref.fetch().table.to_pylist()
            flags = [Cut(row["cut"]) for row in rows]
            assert flags == [expected_cuts(row, records[row["id"]], tokenizer) for row in rows], (task, limits)
            assert ref.cut == CutCounts(sum(map(bool, flags)), *(sum(bool(f & flag) for f in flags) for flag in
                                                                  (Cut.TEXT, Cut.FRAME, Cut.RESPONSE, Cut.DOCUMENT)))
        lines = list(cut_warnings({"train": refs}, limits))
        if limits == TokenLimits():
            assert lines == [] and all(ref.cut == CutCounts() for ref in refs.values())
    # The last limits leave no room for the frames: every record of both tasks is named (in the registry's
    # order), with what to raise.
    assert lines == [
        "warning: the token limits shortened 5 of the 5 Q2I train records: 5 queries (data.max_text 3); the "
        "instruction of 5 queries: data.max_text 3 does not hold it, raise it; a positive or negative of 5 "
        "(data.max_text 3)",
        "warning: the token limits shortened 6 of the 6 SA train records: the input of 6 prompts (data.max_prompt "
        "6); the instruction, options or answer cue of 6: data.max_prompt 6 does not hold them, raise it"]


def test_collate_generative_masks_the_prompt(pools):
    rows = pools["SA"].table.slice(0, 4)
    batch = collate_generative(rows, pad_id=0)
    for i, row in enumerate(rows.to_pylist()):
        n_prompt, n_resp = len(row["prompt_ids"]), len(row["response_ids"])
        full = row["prompt_ids"] + row["response_ids"]
        width = batch["input_ids"].shape[1]
        assert batch["input_ids"][i].tolist() == full + [0] * (width - len(full))
        assert batch["attention_mask"][i].tolist() == [1] * len(full) + [0] * (width - len(full))
        assert batch["labels"][i].tolist() == [IGNORE_INDEX] * n_prompt + row["response_ids"] + \
            [IGNORE_INDEX] * (width - n_prompt - n_resp)
    assert batch["task_ids"].tolist() == [task_index("SA")] * 4


def test_collate_embedding_puts_positives_then_negatives(pools):
    rows = pools["Q2I"].table
    batch = collate_embedding(rows, pad_id=0)
    records = rows.to_pylist()
    docs = [r["positive_ids"] for r in records] + [n for r in records for n in r["negative_ids"]]
    owners = [i for i, r in enumerate(records) for _ in r["negative_ids"]]
    assert batch["negative_owner"].tolist() == owners
    for j, doc in enumerate(docs):
        assert batch["doc_ids"][j, : len(doc)].tolist() == doc and batch["doc_mask"][j].sum() == len(doc)
    assert batch["query_prefix_len"].tolist() == [r["query_prefix_len"] for r in records]
    assert batch["query_ids"].shape[0] == len(records)


def test_missing_task_file_is_a_clear_error(dataset):
    with pytest.raises(FileNotFoundError, match="no record file for task"):
        open_streams(dataset[0], "train", dataset[1], tasks=["SA", "PM"])


def test_a_bad_tokenizer_fails_in_the_driver_naming_the_path(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a tokenizer folder"):
        open_streams(dataset[0], "train", tmp_path)


def test_smollm2_gguf_tokenizer_converts_once_and_has_embed(smollm2_cache):
    folder = resolve_tokenizer("smollm2", cache_dir=smollm2_cache)
    assert (folder / "tokenizer.json").is_file()
    written = (folder / "tokenizer.json").stat().st_mtime_ns
    assert resolve_tokenizer("smollm2", cache_dir=smollm2_cache) == folder  # cached: not converted again
    assert (folder / "tokenizer.json").stat().st_mtime_ns == written
    tokenizer, info = load_tokenizer(folder)
    assert info.embed_id == info.vocab_size - 1  # appended after the 49,152 GGUF tokens
    assert tokenizer.id_to_token(info.eos_id) == "<|im_end|>" and info.eos_id == 2  # the GGUF's own, any transformers
    ids = tokenizer.encode("Red running shoes", add_special_tokens=False).ids
    assert tokenizer.decode(ids) == "Red running shoes" and max(ids) < info.embed_id


def test_corpus_tokenizer_is_a_regular_hf_folder(dataset):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(dataset[1])
    _, info = load_tokenizer(dataset[1])
    assert hf.convert_tokens_to_ids("<embed>") == info.embed_id and hf.eos_token_id == info.eos_id
    assert info.vocab_size <= 400


def test_bad_tokenizer_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a tokenizer folder"):
        resolve_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_tokenizer(tmp_path / "model.gguf")


def test_pools_are_one_contiguous_int32_table(pools):
    column = pools["SA"].table.column("prompt_ids")
    assert column.num_chunks == 1  # one chunk: take() by row index without walking chunks
    assert np.asarray(column.chunk(0).values).dtype == np.int32


def test_a_long_instruction_leaves_the_query_half_the_room(dataset):
    from recfound.data.blocks import records_table
    from recfound.data.tokenize import tokenize_batch
    from recfound.tasks import get_task

    tokenizer, _ = load_tokenizer(dataset[1])
    long_query = {**Q2I[0], "task": "Q2I", "instruction": "Embed this search. " * 20, "negatives": [],
                  "query": "red shoe size 3 " * 10}
    short_query = {**long_query, "query": "red shoe"}
    rows = tokenize_batch(records_table([long_query, short_query], get_task("Q2I")), dataset[1], "embedding",
                          TokenLimits(max_text=17)).to_pylist()
    long_tokens = tokenizer.encode(long_query["query"], add_special_tokens=False).ids
    assert len(rows[0]["query_ids"]) == 17 and rows[0]["query_prefix_len"] == 1 + 8  # <embed> + half of 16
    assert rows[0]["query_ids"][9:] == long_tokens[:8]
    short_tokens = tokenizer.encode(short_query["query"], add_special_tokens=False).ids
    assert rows[1]["query_ids"][-len(short_tokens):] == short_tokens  # a short query is kept whole
    assert len(rows[1]["query_ids"]) == 17


def bad_sa(i: int) -> dict:
    return {**SA[i], "output": "F"}  # not among the options


def write_split(root, files: dict[str, list]) -> None:
    (root / "train").mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        (root / "train" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pool_refs_hold_the_pools_in_the_object_store(pool_refs, pools):
    from recfound.data.streams import TokenPool

    for name, ref in pool_refs.items():
        assert len(ref) == len(pools[name]) and ref.fingerprint == TokenPool(name, pools[name].table).fingerprint
    assert pools["SA"].table.column("position").to_pylist() == list(range(len(SA)))


def test_a_bad_record_stops_a_read_task_with_its_own_one_line_error(dataset, tmp_path, ray_cluster):
    from recfound.data.reader import RecordError

    write_split(tmp_path, {"SA": SA[:3] + [bad_sa(3)] + SA[4:], "Q2I": Q2I})
    with pytest.raises(RecordError) as info:
        materialize_pools(open_streams(tmp_path, "train", dataset[1]))
    assert type(info.value) is RecordError  # not Ray's wrapping of it
    assert str(info.value).startswith(f"{tmp_path / 'train' / 'SA.jsonl'}:4: output: answer 'F' is not among")


def test_skip_counts_what_each_read_task_dropped(dataset, tmp_path, ray_cluster):
    from recfound.data.reader import SkipReport

    bad_q2i = {**Q2I[0], "positive": ""}
    write_split(tmp_path, {"SA": [bad_sa(0)] + SA[1:4] + ["not json"] + SA[4:] + [bad_sa(5)],
                           "Q2I": Q2I[:2] + [bad_q2i] + Q2I[2:]})
    report = SkipReport(max_reasons=2)
    pools = materialize_pools(open_streams(tmp_path, "train", dataset[1], policy="skip"), report)
    assert report.skipped == {"SA": 3, "Q2I": 1}
    first_reasons = [f"{tmp_path / 'train' / 'Q2I.jsonl'}:3", f"{tmp_path / 'train' / 'SA.jsonl'}:1"]  # task order
    assert [reason.split(": ")[0] for reason in report.reasons] == first_reasons
    assert {name: len(pool) for name, pool in pools.items()} == {"Q2I": len(Q2I), "SA": len(SA) - 1}
    sa = pools["SA"].fetch().table
    assert sa.column("id").to_pylist() == [r["id"] for r in SA[1:]] and "problem" not in sa.column_names


def test_a_task_file_without_valid_records_is_an_error(dataset, tmp_path, ray_cluster):
    write_split(tmp_path, {"SA": [bad_sa(0)], "Q2I": Q2I})
    with pytest.raises(ValueError, match=f"{tmp_path / 'train' / 'SA.jsonl'}: no valid records for task SA"):
        materialize_pools(open_streams(tmp_path, "train", dataset[1], tasks=["SA"], policy="skip"))


def test_read_blocks_keep_file_positions_and_number_problems(tmp_path):
    from recfound.data.blocks import split_problems
    from recfound.data.task_source import read_task_file
    from recfound.tasks import get_task

    write_split(tmp_path, {"SA": [bad_sa(0), SA[1], SA[2], bad_sa(3), bad_sa(4), SA[5]]})
    blocks = list(read_task_file(str(tmp_path / "train" / "SA.jsonl"), get_task("SA"), "skip", block_rows=2))
    records, problems = zip(*(split_problems(block) for block in blocks))
    assert [r.column("id").to_pylist() for r in records] == [[SA[1]["id"], SA[2]["id"]], [SA[5]["id"]]]
    assert [r.column("position").to_pylist() for r in records] == [[0, 1], [2]]
    assert [p.column("position").to_pylist() for p in problems] == [[0], [1, 2]]
    sa_file = tmp_path / "train" / "SA.jsonl"
    assert [[reason.split(": ")[0] for reason in p.column("problem").to_pylist()] for p in problems] == \
        [[f"{sa_file}:1"], [f"{sa_file}:4", f"{sa_file}:5"]]


def test_a_bucket_gives_the_pools_the_local_folder_gives(dataset, pools, object_store, ray_cluster):
    """Listed in the driver, read and tokenized in Ray workers (which reach the session's bucket as a
    cloud node reaches its own): the same pools, row for row, as from the local folder."""
    from recfound import storage
    from recfound.data.pipeline import load_pools

    root, tokenizer_dir = dataset
    bucket_root = f"{object_store}/streams-test/corpus"
    storage.upload(root / "train", f"{bucket_root}/train")
    remote = {name: ref.fetch().table for name, ref in load_pools(bucket_root, "train", tokenizer_dir).items()}
    assert list(remote) == list(pools)
    for name, pool in pools.items():
        assert remote[name].equals(pool.table), name
    storage.delete(bucket_root)
