"""Batch tokenization of records into token-id columns (the `map_batches` function of the streams).

Generative rows keep the prompt and the response apart (`prompt_ids`, `response_ids`, the latter
ending with EOS) so the loss can be masked to the response. Embedding rows carry `query_ids`
(starting with `<embed>`), `query_prefix_len` (the `<embed>` + instruction tokens, for pooling over
the non-instruction tokens only), `positive_ids` and `negative_ids` (a list per row). Every row also has
`cut`: the `Cut` flags of what the token limits shortened in it (0: nothing), which runs report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from recfound.data.prompts import embedding_instruction, generative_pieces, generative_response
from recfound.data.tokenizer import TokenizerInfo, load_tokenizer
from recfound.tasks import Kind

IDS = pa.list_(pa.int32())
CUT_COLUMN = "cut"


class Cut(enum.IntFlag):
    """What the token limits shortened in a row (its `cut` column)."""

    TEXT = 1  # the long part: a generative prompt's input, an embedding query's text
    FRAME = 2  # the fixed parts: an instruction, or a prompt's options and answer cue
    RESPONSE = 4  # a generative reference answer
    DOCUMENT = 8  # an embedding record's positive or one of its negatives


@dataclass(frozen=True)
class TokenLimits:
    """Length limits in tokens (the long part is truncated, never the instruction or the answer cue)."""

    max_prompt: int = 512
    max_response: int = 256
    max_text: int = 256  # each embedding text (query, positive, negative), <embed> included

    def __post_init__(self) -> None:
        for name in ("max_prompt", "max_response", "max_text"):
            if getattr(self, name) < 2:
                raise ValueError(f"TokenLimits.{name} must be at least 2, got {getattr(self, name)}")


@lru_cache(maxsize=4)
def _cached_tokenizer(path: str):
    return load_tokenizer(path)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    return [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


def tokenize_batch(batch: pa.Table, tokenizer_path: str, kind: str, limits: TokenLimits) -> pa.Table:
    """Token-id columns for a batch of normalized records of one kind (see module doc)."""
    tokenizer, info = _cached_tokenizer(tokenizer_path)
    columns = {name: batch.column(name) for name in ("task", "id", "position")}
    if Kind(kind) is Kind.GENERATIVE:
        columns.update(_generative_columns(batch, tokenizer, info, limits))
    else:
        columns.update(_embedding_columns(batch, tokenizer, info, limits))
    return pa.table(columns)


def fitted_prompt(head: list[int], body: list[int], tail: list[int], limit: int) -> tuple[list[int], Cut]:
    """(head + body + tail in at most `limit` tokens, what was shortened): the body is cut first (TEXT), then
    the head's end (FRAME; the body is then gone too, TEXT if it had any tokens)."""
    budget = limit - len(head) - len(tail)
    if budget >= 0:
        return head + body[:budget] + tail, Cut.TEXT if len(body) > budget else Cut(0)
    cut = Cut.FRAME | (Cut.TEXT if body else Cut(0))
    if len(tail) < limit:
        return head[: limit - len(tail)] + tail, cut
    return tail[-limit:], cut


def _generative_columns(batch: pa.Table, tokenizer, info: TokenizerInfo, limits: TokenLimits) -> dict:
    pieces = [generative_pieces(i, x, o) for i, x, o in zip(
        batch.column("instruction").to_pylist(), batch.column("input").to_pylist(),
        batch.column("options").to_pylist())]
    heads, bodies, tails = (_encode(tokenizer, list(part)) for part in zip(*pieces)) if pieces else ([], [], [])
    responses = _encode(tokenizer, [generative_response(o) for o in batch.column("output").to_pylist()])
    prompts = [fitted_prompt(h, b, t, limits.max_prompt) for h, b, t in zip(heads, bodies, tails)]
    prompt_ids = [ids for ids, _ in prompts]
    response_ids = [r[: limits.max_response - 1] + [info.eos_id] for r in responses]
    cut = [shortened | (Cut.RESPONSE if len(r) >= limits.max_response else Cut(0))
           for (_, shortened), r in zip(prompts, responses)]
    return {"prompt_ids": pa.array(prompt_ids, IDS), "response_ids": pa.array(response_ids, IDS),
            CUT_COLUMN: pa.array(cut, pa.int8())}


def _embedding_columns(batch: pa.Table, tokenizer, info: TokenizerInfo, limits: TokenLimits) -> dict:
    room = limits.max_text - 1  # after <embed>
    instructions = _encode(tokenizer, [embedding_instruction(t) for t in batch.column("instruction").to_pylist()])
    queries = _encode(tokenizer, batch.column("query").to_pylist())
    positives = _encode(tokenizer, batch.column("positive").to_pylist())
    negative_lists = batch.column("negatives").to_pylist()
    flat_negatives = _encode(tokenizer, [text for texts in negative_lists for text in texts])
    query_ids, prefix_lens, cut = [], [], []
    for instruction, query in zip(instructions, queries):
        # A long instruction may take at most half of what the query does not need: never all of it.
        kept = instruction[: max(room - len(query), room // 2)]
        ids = (kept + query)[:room]
        query_ids.append([info.embed_id] + ids)
        prefix_lens.append(1 + min(len(kept), room))
        cut.append((Cut.FRAME if len(kept) < len(instruction) else Cut(0))
                   | (Cut.TEXT if len(kept) + len(query) > room else Cut(0)))
    negative_ids, start = [], 0
    for row, texts in enumerate(negative_lists):
        negatives = flat_negatives[start:start + len(texts)]
        negative_ids.append(_document_rows(negatives, info, limits))
        start += len(texts)
        if len(positives[row]) > room or any(len(ids) > room for ids in negatives):
            cut[row] |= Cut.DOCUMENT
    return {
        "query_ids": pa.array(query_ids, IDS),
        "query_prefix_len": pa.array(prefix_lens, pa.int32()),
        "positive_ids": pa.array(_document_rows(positives, info, limits), IDS),
        "negative_ids": pa.array(negative_ids, pa.list_(IDS)),
        CUT_COLUMN: pa.array(cut, pa.int8()),
    }


def _document_rows(encoded: list[list[int]], info: TokenizerInfo, limits: TokenLimits) -> list[list[int]]:
    """`<embed>` + each document's tokens, cut to `max_text` in all (documents carry no instruction)."""
    return [[info.embed_id] + ids[: limits.max_text - 1] for ids in encoded]


def document_ids(texts: list[str], tokenizer_path: str, limits: TokenLimits) -> list[list[int]]:
    """Token rows of documents (retrieval candidates) exactly as training tokenizes positives and negatives."""
    tokenizer, info = _cached_tokenizer(str(tokenizer_path))
    return _document_rows(_encode(tokenizer, texts), info, limits)
