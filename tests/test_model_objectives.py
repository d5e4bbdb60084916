"""Objectives: mean pooling, InfoNCE, response cross-entropy, and the per-forward attention switch."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest
import torch

from recfound.data.collate import collate_embedding, collate_generative
from recfound.model.attention import bidirectional
from recfound.model.objectives import (EmbeddingConfig, embed, embedding_loss, generative_loss, info_nce,
                                       mean_pool, response_ce, response_row_losses)
from recfound.model.presets import PRESETS, preset_config

VOCAB, PAD, EMBED = 64, 0, 1


def tiny_model(attn_implementation: str = "sdpa", architecture: str = "llama"):
    """The tiny preset (Llama), or a Mistral/Qwen2 of the same size."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    if architecture == "llama":
        config = preset_config("tiny", VOCAB, pad_id=PAD, eos_id=2)
    else:
        config = AutoConfig.for_model(architecture, vocab_size=VOCAB, pad_token_id=PAD, **PRESETS["tiny"])
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation).eval()


@pytest.fixture(scope="module", params=[("llama", "eager"), ("llama", "sdpa"), ("mistral", "sdpa"), ("qwen2", "eager")],
                ids=lambda p: "-".join(p))
def model(request):
    architecture, attn_implementation = request.param
    return tiny_model(attn_implementation, architecture)


def random_rows(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded random ids (never the pad id) and their mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (len(lengths), max(lengths)), generator=generator)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return ids.masked_fill(mask == 0, PAD), mask


# ---- mean_pool ----------------------------------------------------------------------------------

def test_mean_pool_matches_a_plain_loop():
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    pooled = mean_pool(hidden, mask)
    for b in range(3):
        rows = [hidden[b, t] for t in range(5) if mask[b, t]]
        torch.testing.assert_close(pooled[b], sum(rows) / len(rows), rtol=1e-12, atol=1e-12)


def test_mean_pool_leaves_out_the_instruction_prefix_with_fallback():
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    prefix_len = torch.tensor([2, 1, 3])  # the last row is all instruction: falls back to its 2 tokens
    pooled = mean_pool(hidden, mask, prefix_len)
    torch.testing.assert_close(pooled[0], hidden[0, 2:4].mean(0))
    torch.testing.assert_close(pooled[1], hidden[1, 1:5].mean(0))
    torch.testing.assert_close(pooled[2], hidden[2, 0:2].mean(0))


# ---- info_nce against a plain float64 computation ----------------------------------------------

def reference_info_nce(queries, documents, temperature, positives=None, owner=None, symmetric=False):
    """Loops and math: -log softmax of the positive among the candidate documents, averaged."""
    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    q, d = queries.tolist(), documents.tolist()
    positives = list(range(len(q))) if positives is None else positives
    negatives = [j for j in range(len(d)) if j not in positives]
    losses = []
    for i, p in enumerate(positives):
        candidates = [j for j in range(len(d))
                      if owner is None or j in positives or owner[negatives.index(j)] == i]
        scores = {j: cosine(q[i], d[j]) / temperature for j in candidates}
        losses.append(-scores[p] + math.log(sum(math.exp(s) for s in scores.values())))
    loss = sum(losses) / len(losses)
    if symmetric:
        back = []
        for i, p in enumerate(positives):
            scores = [cosine(d[p], q[k]) / temperature for k in range(len(q))]
            back.append(-scores[i] + math.log(sum(math.exp(s) for s in scores)))
        loss = (loss + sum(back) / len(back)) / 2
    return loss


@pytest.fixture
def embeddings():
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(3, 6, dtype=torch.float64, generator=generator)
    documents = torch.randn(3 + 4, 6, dtype=torch.float64, generator=generator)  # 3 positives, 4 negatives
    return queries, documents


@pytest.mark.parametrize("temperature", [0.02, 0.5, 1.0])
@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_with_given_negatives(embeddings, temperature, symmetric):
    queries, documents = embeddings
    loss = info_nce(queries, documents, temperature, symmetric)
    expected = reference_info_nce(queries, documents, temperature, symmetric=symmetric)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_info_nce_temperature_changes_the_loss(embeddings):
    queries, documents = embeddings
    losses = {t: info_nce(queries, documents, t).item() for t in (0.02, 0.1, 1.0)}
    assert len(set(losses.values())) == 3
    # At a high temperature the scores flatten out: the loss tends to log(number of candidates).
    assert info_nce(queries, documents, 1e4).item() == pytest.approx(math.log(7), rel=1e-3)


def test_info_nce_own_negatives_only(embeddings):
    queries, documents = embeddings
    owner = [0, 0, 2, 1]
    loss = info_nce(queries, documents, 0.1, negative_owner=torch.tensor(owner))
    assert loss.item() == pytest.approx(reference_info_nce(queries, documents, 0.1, owner=owner), rel=1e-10)


def test_info_nce_over_gathered_rows():
    """Rank 1 of 2: its queries point at their positives in the documents gathered from both ranks."""
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(2, 5, dtype=torch.float64, generator=generator)
    gathered = torch.randn(2 * (2 + 1), 5, dtype=torch.float64, generator=generator)  # per rank: 2 pos, 1 neg
    positives = [3, 4]
    for symmetric in (False, True):
        loss = info_nce(queries, gathered, 0.05, symmetric, positive_index=torch.tensor(positives))
        expected = reference_info_nce(queries, gathered, 0.05, positives=positives, symmetric=symmetric)
        assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_bad_inputs_name_the_argument(embeddings):
    queries, documents = embeddings
    cases = [
        (lambda: info_nce(queries, documents, 0.0), "temperature"),
        (lambda: info_nce(queries[:0], documents), "queries"),
        (lambda: info_nce(queries, documents[:2]), "documents"),
        (lambda: info_nce(queries, documents[:, :4]), "documents"),
        (lambda: info_nce(queries, documents, negative_owner=torch.zeros(3, dtype=torch.long)), "negative_owner"),
        (lambda: info_nce(queries, documents, positive_index=torch.arange(2)), "positive_index"),
        (lambda: mean_pool(torch.zeros(0, 3, 2), torch.zeros(0, 3)), "hidden"),
        (lambda: mean_pool(torch.zeros(2, 3, 2), torch.ones(2, 4)), "mask"),
        (lambda: mean_pool(torch.zeros(2, 3, 2), torch.ones(2, 3), torch.ones(3)), "prefix_len"),
        (lambda: response_ce(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long)), "labels"),
        (lambda: response_ce(torch.zeros(0, 3, 5), torch.zeros(0, 3, dtype=torch.long)), "logits"),
        (lambda: EmbeddingConfig(temperature=-1), "temperature"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=name):
            call()


# ---- response_ce ---------------------------------------------------------------------------------

def test_response_ce_equals_the_transformers_loss():
    model = tiny_model()
    ids, mask = random_rows([9, 6, 7], seed=5)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # the prompt
    with torch.no_grad():
        builtin = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        ours = response_ce(model(input_ids=ids, attention_mask=mask).logits, labels)
    torch.testing.assert_close(ours, builtin, rtol=1e-6, atol=1e-6)
    assert response_ce(torch.zeros(1, 3, 5), torch.full((1, 3), -100)).item() == 0.0


def plain_response_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Per-row sums of -log p(label[t+1]) at every position t followed by a response label, in float64, and
    the counts: written out position by position."""
    log_p = torch.log_softmax(logits.double(), dim=-1)
    sums, counts = torch.zeros(labels.shape[0], dtype=torch.float64), []
    for row in range(labels.shape[0]):
        positions = [t for t in range(labels.shape[1] - 1) if labels[row, t + 1] != -100]
        for t in positions:
            sums[row] = sums[row] - log_p[row, t, labels[row, t + 1]]
        counts.append(len(positions))
    return sums, counts


def prompt_and_response_rows() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids, mask = random_rows([9, 6, 7, 3], seed=7)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :4] = -100  # the prompts; the last row is all prompt: no response token
    return ids, mask, labels


def test_response_rows_apply_the_head_at_response_positions_only_with_the_full_logits_losses(model):
    ids, mask, labels = prompt_and_response_rows()
    head_inputs = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: head_inputs.append(args[0].shape))
    try:
        with torch.no_grad():
            sums, counts = response_row_losses(model, ids, mask, labels)
            expected, expected_counts = plain_response_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
    finally:
        hook.remove()
    torch.testing.assert_close(sums.double(), expected, rtol=1e-5, atol=1e-5)
    assert counts.tolist() == expected_counts == [5, 2, 3, 0]
    assert head_inputs[0] == (5 + 2 + 3, model.config.hidden_size)  # then the full forward of the check


@pytest.mark.parametrize("targets", [("q_proj", "k_proj", "v_proj", "o_proj"), ("q_proj", "lm_head")],
                         ids=["attention", "with-the-head"])
def test_response_rows_give_a_tmole_adapter_the_full_logits_gradients(targets):
    """The adapter's tied head with its own `<embed>` row (a forward hook on the head) and its routing, in
    float64: the losses and every trainable gradient equal those of the full logits; a head the adapter
    wraps too (routed per batch row) as well."""
    from recfound.data.tokenizer import TokenizerInfo
    from recfound.model.adapter import AdapterConfig
    from recfound.model.attach import attach_adapter
    from recfound.model.backbone import load_backbone

    info = TokenizerInfo("corpus", vocab_size=VOCAB, pad_id=PAD, eos_id=PAD, embed_id=EMBED)
    torch.manual_seed(0)
    adapter = attach_adapter(load_backbone("tiny", info, dtype="float64"),
                             AdapterConfig(targets=targets, rank=4, alpha=8.0, task_dim=16, router_hidden=8,
                                           dropout=0.0),
                             token_ids=[EMBED])
    for _, _, projection in adapter.projections():
        torch.nn.init.normal_(projection.B, std=0.1)
    ids, mask, labels = prompt_and_response_rows()
    ids[0, 5] = EMBED  # a response token whose logit comes from the adapter's own row
    labels[0, 5] = EMBED
    grads = []
    for fast in (True, False):
        adapter.zero_grad(set_to_none=True)
        adapter.set_tasks(torch.tensor([3, 4, 5, 6]))  # generative tasks
        if fast:
            sums, _ = response_row_losses(adapter.model, ids, mask, labels)
        else:
            sums, _ = plain_response_losses(adapter.model(input_ids=ids, attention_mask=mask).logits, labels)
        sums.sum().backward()
        grads.append((sums.detach(), {n: p.grad.clone() for n, p in adapter.trainable_state().items()
                                      if p.grad is not None}))
    (fast_sums, fast_grads), (plain_sums, plain_grads) = grads
    torch.testing.assert_close(fast_sums, plain_sums, rtol=1e-12, atol=1e-12)
    assert fast_grads.keys() == plain_grads.keys() and any(name.endswith("rows") for name in fast_grads)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_a_model_whose_head_does_more_than_a_linear_layer_uses_its_full_logits():
    """Gemma 2 soft-caps its logits after the head: the losses are those of its own logits, not of a bare
    head on the response positions."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("gemma2", vocab_size=VOCAB, pad_token_id=PAD, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  final_logit_softcapping=1.0, initializer_range=0.5)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    ids, mask, labels = prompt_and_response_rows()
    with torch.no_grad():
        sums, counts = response_row_losses(model, ids, mask, labels)
        expected, expected_counts = plain_response_losses(model(input_ids=ids, attention_mask=mask).logits, labels)
        hidden = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        uncapped, _ = plain_response_losses(model.get_output_embeddings()(hidden), labels)
    torch.testing.assert_close(sums.double(), expected, rtol=1e-5, atol=1e-5)
    assert counts.tolist() == expected_counts
    assert (uncapped - expected).abs().max() > 0.1  # the cap matters here: a bare head would be wrong


# ---- the attention switch (eager and SDPA) -----------------------------------------------------

def hidden_states(model, ids, mask):
    with torch.no_grad():
        return model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state


def changed(ids, row, position):
    other = ids.clone()
    other[row, position] = 3 + (other[row, position] - 2) % (VOCAB - 3)
    return other


@pytest.mark.parametrize("lengths", [[6, 6], [6, 4]], ids=["unpadded", "padded"])
def test_bidirectional_token_zero_sees_later_tokens_but_not_padding(model, lengths):
    ids, mask = random_rows(lengths, seed=6)
    with bidirectional(model):
        base = hidden_states(model, ids, mask)
        later = hidden_states(model, changed(ids, 1, lengths[1] - 1), mask)
        padding = hidden_states(model, changed(ids, 1, 5), mask) if lengths[1] < 6 else base
    assert not torch.allclose(base[1, 0], later[1, 0])
    torch.testing.assert_close(base[0], later[0])  # other rows are untouched
    real = mask.bool()
    torch.testing.assert_close(base[real], padding[real])


def test_causal_by_default_and_after_the_block(model):
    ids, mask = random_rows([6, 4], seed=7)
    with bidirectional(model):
        pass
    for attempt in range(2):
        base = hidden_states(model, ids, mask)
        later = hidden_states(model, changed(ids, 0, 5), mask)
        torch.testing.assert_close(base[0, :5], later[0, :5])
        assert not torch.allclose(base[0, 5], later[0, 5])
        with pytest.raises(RuntimeError, match="boom"), bidirectional(model):
            raise RuntimeError("boom")
    assert not model.get_decoder()._forward_pre_hooks


def test_bidirectional_embedding_ignores_padding(model):
    """A row embedded alone equals the same row padded inside a batch of longer rows."""
    ids, mask = random_rows([7, 4], seed=8)
    batch = embed(model, ids, mask, bidirectional=True)
    alone = embed(model, ids[1:, :4], mask[1:, :4], bidirectional=True)
    torch.testing.assert_close(batch[1], alone[0], rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_recomputes_bidirectionally():
    """The backward pass runs after the block: the recomputed layers must still be non-causal."""
    ids, mask = random_rows([6, 6], seed=9)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        embed(model, ids, mask, bidirectional=True).square().sum().backward()
        grads.append(model.get_decoder().layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


# ---- one step of both objectives ---------------------------------------------------------------

def collated_batches() -> tuple[dict, dict]:
    embedding_rows = pa.table({
        "task": ["U2I", "Q2I", "I2I"],
        "query_ids": [[EMBED, 5, 6, 7, 8], [EMBED, 9, 10, 11], [EMBED, 12, 13]],
        "query_prefix_len": pa.array([3, 2, 3], pa.int32()),
        "positive_ids": [[EMBED, 20, 21], [EMBED, 22], [EMBED, 23, 24, 25]],
        "negative_ids": [[[EMBED, 30]], [], [[EMBED, 31, 32], [EMBED, 33]]],
    })
    generative_rows = pa.table({
        "task": ["QR", "SR"],
        "prompt_ids": [[40, 41, 42], [43, 44]],
        "response_ids": [[50, 51], [52, 53, 54]],
    })
    embedding, generative = collate_embedding(embedding_rows, PAD), collate_generative(generative_rows, PAD)
    return ({k: torch.from_numpy(v) for k, v in embedding.items()},
            {k: torch.from_numpy(v) for k, v in generative.items()})


@pytest.mark.parametrize("config", [EmbeddingConfig(),
                                    EmbeddingConfig(temperature=0.05, symmetric=True, pool_instruction=False,
                                                    bidirectional=True, share_negatives=False)],
                         ids=["defaults", "all-options"])
def test_both_objectives_backpropagate_to_the_parameters(config):
    model = tiny_model().train()
    embedding_batch, generative_batch = collated_batches()
    loss = embedding_loss(model, embedding_batch, config) + generative_loss(model, generative_batch)
    assert torch.isfinite(loss)
    loss.backward()
    attention = model.get_decoder().layers[0].self_attn
    for parameter in (attention.q_proj.weight, attention.o_proj.weight, model.get_input_embeddings().weight):
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0


def test_both_objectives_route_a_tmole_adapter_by_task():
    """Embedding rows reach the E+S experts only, generative rows the S+G experts only."""
    from recfound.data.tokenizer import TokenizerInfo
    from recfound.model.adapter import AdapterConfig
    from recfound.model.attach import attach_adapter
    from recfound.model.backbone import load_backbone

    info = TokenizerInfo("corpus", vocab_size=VOCAB, pad_id=PAD, eos_id=PAD, embed_id=EMBED)
    config = AdapterConfig(rank=4, alpha=8.0, task_dim=16, router_hidden=8, dropout=0.0)
    adapter = attach_adapter(load_backbone("tiny", info), config, token_ids=[EMBED])
    projections = [wrapped for _, _, wrapped in adapter.projections()]
    for projection in projections:
        torch.nn.init.normal_(projection.B, std=0.1)  # B = 0 would block every expert's gradient to A
    embedding_batch, generative_batch = collated_batches()
    for loss, blocked in ((embedding_loss(adapter.model, embedding_batch, route=adapter.set_tasks), slice(4, 6)),
                          (generative_loss(adapter.model, generative_batch, route=adapter.set_tasks), slice(0, 2))):
        adapter.zero_grad(set_to_none=False)
        loss.backward()
        a_grad = projections[0].A.grad.view(config.num_experts, config.rank, -1)
        assert a_grad[blocked].abs().sum() == 0  # the other kind's experts (order [E | S | G])
        assert a_grad[2:4].abs().sum() > 0  # the shared experts learn from both kinds


def test_checkpointing_keeps_each_layers_routing_for_its_recompute():
    """Queries, documents and a generative batch are routed before one backward: with checkpointing,
    every layer's recompute must see its own forward's routing, so the gradients equal the plain run's."""
    from recfound.data.tokenizer import TokenizerInfo
    from recfound.model.adapter import AdapterConfig
    from recfound.model.attach import attach_adapter
    from recfound.model.backbone import load_backbone

    info = TokenizerInfo("corpus", vocab_size=VOCAB, pad_id=PAD, eos_id=PAD, embed_id=EMBED)
    embedding_batch, generative_batch = collated_batches()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same experts and routers in both runs
        adapter = attach_adapter(load_backbone("tiny", info, dtype="float64"),
                                 AdapterConfig(rank=4, alpha=8.0, task_dim=16, router_hidden=8, dropout=0.0),
                                 token_ids=[EMBED])
        torch.manual_seed(3)
        for _, _, projection in adapter.projections():
            torch.nn.init.normal_(projection.B, std=0.1)
        adapter.train()
        if checkpointing:
            adapter.enable_checkpointing()
        loss = (embedding_loss(adapter.model, embedding_batch, route=adapter.set_tasks)
                + generative_loss(adapter.model, generative_batch, route=adapter.set_tasks))
        loss.backward()
        grads.append({n: p.grad for n, p in adapter.trainable_state().items() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-10, atol=1e-12, msg=name)
