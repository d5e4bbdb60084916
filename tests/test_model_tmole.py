"""TMoLE: the fused layer against the plain sum-of-experts formula, masking, gates, and the wrapped model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recfound.data.tokenizer import TokenizerInfo
from recfound.model.adapter import AdapterConfig
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.tmole import Routing, TMoLELinear
from recfound.tasks import Kind, task_index

INFO = TokenizerInfo("corpus", vocab_size=300, pad_id=0, eos_id=3, embed_id=4)
GENERATIVE = ["QR", "SA", "QR", "PM"]
EMBEDDING = ["U2I", "Q2I", "I2I"]
EXPERT_COUNTS = [(2, 2, 2), (1, 0, 3), (0, 2, 1), (2, 1, 0)]


def small_config(counts=(2, 2, 2), **overrides) -> AdapterConfig:
    e, s, g = counts
    return AdapterConfig(rank=4, alpha=8.0, embedding_experts=e, shared_experts=s, generative_experts=g,
                         **{"task_dim": 16, "router_hidden": 8, **overrides})


def make_layer(counts, d_in=24, d_out=20, **overrides):
    """A standalone float64 TMoLE projection with non-zero experts, its routing and a task table."""
    torch.manual_seed(0)
    config = small_config(counts, **overrides)
    routing = Routing(config)
    layer = TMoLELinear(torch.nn.Linear(d_in, d_out, dtype=torch.float64), config, routing).double()
    torch.nn.init.normal_(layer.B, std=0.5)
    table = torch.nn.Embedding(13, config.task_dim, dtype=torch.float64)
    return layer, routing, table, config


def route(routing: Routing, table, names: list[str]) -> torch.Tensor:
    ids = torch.tensor([task_index(n) for n in names])
    kind = Kind.EMBEDDING if names[0] in EMBEDDING else Kind.GENERATIVE
    routing.allowed = routing.allowed_by_kind[kind]
    routing.task_embedding = table(ids)
    return ids


def reference(layer: TMoLELinear, config: AdapterConfig, table, ids: torch.Tensor, x: torch.Tensor, kind: Kind,
              router=None):
    """o = W0 x + (alpha/r) sum_j v_j B_j A_j x with v = softmax(mask(router(e_task))), one sample at a time."""
    e, s, g, r = config.embedding_experts, config.shared_experts, config.generative_experts, config.rank
    group = ["E"] * e + ["S"] * s + ["G"] * g
    other = "G" if kind is Kind.EMBEDDING else "E"
    out = []
    for b, task_id in enumerate(ids.tolist()):
        logits = (router or layer.router)(table.weight[task_id])
        v = torch.softmax(torch.where(torch.tensor([grp == other for grp in group]), float("-inf"), logits), -1)
        y = x[b] @ layer.base_layer.weight.T + layer.base_layer.bias
        for j in range(len(group)):
            a_j, b_j = layer.A[j * r:(j + 1) * r], layer.B[:, j * r:(j + 1) * r]
            y = y + (config.alpha / r) * v[j] * (x[b] @ a_j.T @ b_j.T)
        out.append(y)
    return torch.stack(out)


@pytest.mark.parametrize("counts", EXPERT_COUNTS)
@pytest.mark.parametrize("names", [GENERATIVE, EMBEDDING])
def test_fused_layer_equals_sum_of_experts(counts, names):
    layer, routing, table, config = make_layer(counts)
    layer.eval()
    ids = route(routing, table, names)
    x = torch.randn(len(names), 7, 24, dtype=torch.float64)
    kind = Kind.EMBEDDING if names is EMBEDDING else Kind.GENERATIVE
    fused, plain = layer(x), reference(layer, config, table, ids, x, kind)
    assert ((fused - plain).norm() / plain.norm()).item() < 1e-10


@pytest.mark.parametrize("counts", EXPERT_COUNTS)
@pytest.mark.parametrize("names", [GENERATIVE, EMBEDDING])
def test_masked_experts_get_exactly_zero_gradient(counts, names):
    layer, routing, table, config = make_layer(counts)
    route(routing, table, names)
    layer(torch.randn(len(names), 5, 24, dtype=torch.float64)).square().sum().backward()
    e, s, r = config.embedding_experts, config.shared_experts, config.rank
    masked = slice(e + s, None) if names is EMBEDDING else slice(0, e)
    rows = slice(masked.start * r, None if masked.stop is None else masked.stop * r)
    assert torch.count_nonzero(layer.A.grad[rows]) == 0
    assert torch.count_nonzero(layer.B.grad[:, rows]) == 0
    assert torch.count_nonzero(layer.router[2].weight.grad[masked]) == 0
    assert torch.count_nonzero(layer.router[2].bias.grad[masked]) == 0
    assert torch.count_nonzero(layer.B.grad) > 0


def tiny_adapter(counts=(2, 2, 2), dtype="float64", mode="tmole", seed=0):
    backbone = load_backbone("tiny", INFO, dtype=dtype, seed=seed)
    torch.manual_seed(1)
    return backbone, attach_adapter(backbone, small_config(counts, mode=mode), token_ids=[INFO.embed_id])


def randomise(adapter) -> None:
    """Give every trainable tensor non-trivial values (B = 0 would hide most mistakes)."""
    torch.manual_seed(2)
    with torch.no_grad():
        for param in adapter.trainable_state().values():
            param.normal_(0, 0.2)


@pytest.mark.parametrize("counts", EXPERT_COUNTS)
def test_gates_sum_to_one_over_allowed_experts(counts):
    _, adapter = tiny_adapter(counts)
    randomise(adapter)
    e, s, _ = counts
    for name, kind in zip(adapter.tasks.names, adapter.tasks.kinds):
        for gate in adapter.task_gates(name).values():
            masked = gate[e + s:] if kind is Kind.EMBEDDING else gate[:e]
            assert torch.count_nonzero(masked) == 0
            assert abs(gate.sum().item() - 1.0) < 1e-12 and (gate >= 0).all()


def test_untrained_adapter_equals_base_model():
    base = load_backbone("tiny", INFO, dtype="float64").model
    ids = torch.randint(5, INFO.vocab_size, (3, 9))
    ids[:, 0] = INFO.embed_id
    with torch.no_grad():
        base_hidden = base.model(input_ids=ids).last_hidden_state
        base_logits = base(input_ids=ids).logits
        _, adapter = tiny_adapter()
        adapter.set_tasks([task_index(n) for n in ["QR", "SA", "PM"]])
        hidden = adapter.model.model(input_ids=ids).last_hidden_state
        logits = adapter.model(input_ids=ids).logits
    assert torch.equal(hidden, base_hidden)
    # The <embed> column of the tied head is recomputed from the token row: same values, another summation order.
    assert torch.allclose(logits, base_logits, rtol=0, atol=1e-12)


def test_routing_errors_are_clear():
    _, adapter = tiny_adapter()
    ids = torch.randint(5, INFO.vocab_size, (2, 6))
    with pytest.raises(RuntimeError, match="set_tasks"):
        adapter.model(input_ids=ids)
    with pytest.raises(ValueError, match="one kind"):
        adapter.set_tasks([task_index("QR"), task_index("Q2I")])
    with pytest.raises(ValueError, match="out of range"):
        adapter.set_tasks([99])
    adapter.set_tasks([task_index("QR")] * 3)
    with pytest.raises(ValueError, match="3 task ids for a batch of 2"):
        adapter.model(input_ids=ids)


def test_generative_forward_backward_trains_only_adapter_tensors():
    _, adapter = tiny_adapter(dtype="float32")
    adapter.train()
    for _, _, layer in adapter.projections():  # B = 0 would leave routers and the task table without gradient
        torch.nn.init.normal_(layer.B, std=0.1)
    input_ids = torch.randint(5, INFO.vocab_size, (4, 12))
    labels = input_ids.clone()
    labels[:, :6] = -100  # the prompt: only the response is scored
    logits = adapter(input_ids=input_ids, task_ids=[task_index(n) for n in GENERATIVE]).logits
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in adapter.model.parameters() if not p.requires_grad)
    q = adapter.model.model.layers[0].self_attn.q_proj
    r = adapter.config.rank
    assert torch.count_nonzero(q.B.grad[:, :2 * r]) == 0 and torch.count_nonzero(q.B.grad[:, 2 * r:]) > 0
    assert adapter.task_table.weight.grad[task_index("QR")].abs().sum() > 0
    assert adapter.task_table.weight.grad[task_index("U2I")].abs().sum() == 0


def as_on_a_gpu(monkeypatch, form: str) -> None:
    """With form 'fused', TMoLE's dropout takes the form it takes on a GPU (torch's fused dropout, which
    rescales itself, leaving 1.0 to apply), here on the CPU; with 'mask', the CPU's own form."""
    if form == "fused":
        from recfound.model import tmole

        real = tmole.dropout_parts
        monkeypatch.setattr(tmole, "dropout_parts", lambda x, p, fused: real(x, p, fused=True))


@pytest.mark.parametrize("form", ["mask", "fused"])
def test_dropout_in_training_mode_is_the_formula_with_a_rescaled_mask(monkeypatch, form):
    """o = W0 x + (alpha/r) sum_j v_j B_j A_j dropout(x), dropout(x) = x * keep / (1 - p)."""
    as_on_a_gpu(monkeypatch, form)
    layer, routing, table, config = make_layer((2, 2, 2))
    layer.dropout = 0.3
    layer.train()
    ids = route(routing, table, GENERATIVE)
    x = torch.randn(len(GENERATIVE), 6, 24, dtype=torch.float64)
    torch.manual_seed(11)
    fused = layer(x)
    torch.manual_seed(11)
    if form == "fused":
        dropped = F.dropout(x, 0.3, training=True)
    else:
        dropped = x * (torch.rand_like(x) >= 0.3).double() / (1 - 0.3)
    keep = dropped != 0
    assert torch.allclose(dropped[keep], x[keep] / (1 - 0.3), rtol=1e-12)
    lora_part = reference(layer, config, table, ids, dropped, Kind.GENERATIVE) - layer.base_layer(dropped)
    plain = layer.base_layer(x) + lora_part
    assert 0.2 < 1 - keep.double().mean().item() < 0.4  # the mask really drops about p of the entries
    assert ((fused - plain).norm() / plain.norm()).item() < 1e-10


@pytest.mark.parametrize("field", ["alpha", "task_dim"])
def test_adapter_config_rejects_non_positive_sizes(field):
    with pytest.raises(ValueError, match=f"adapter {field} must be > 0"):
        AdapterConfig(**{field: 0})
    with pytest.raises(ValueError, match="adapter router_hidden must be >= 0"):
        AdapterConfig(router_hidden=-1)


# ----- the authors' options: a one-layer router, one dropout mask per expert -----

@pytest.mark.parametrize("names", [GENERATIVE, EMBEDDING])
def test_linear_router_is_one_layer_and_the_layer_is_the_formula(names):
    layer, routing, table, config = make_layer((2, 2, 2), router_hidden=0)
    assert isinstance(layer.router, torch.nn.Linear)
    assert {name: tuple(p.shape) for name, p in layer.router.named_parameters()} == {"weight": (6, 16), "bias": (6,)}
    layer.eval()
    ids = route(routing, table, names)
    x = torch.randn(len(names), 5, 24, dtype=torch.float64)
    weight, bias = layer.router.weight, layer.router.bias
    kind = Kind.EMBEDDING if names is EMBEDDING else Kind.GENERATIVE
    plain = reference(layer, config, table, ids, x, kind, router=lambda e: e @ weight.T + bias)
    assert ((layer(x) - plain).norm() / plain.norm()).item() < 1e-10
    layer(x).square().sum().backward()
    masked = slice(4, 6) if names is EMBEDDING else slice(0, 2)
    assert torch.count_nonzero(weight.grad[masked]) == 0 and torch.count_nonzero(weight.grad) > 0


def test_linear_router_is_initialised_as_the_authors_do():
    torch.manual_seed(0)
    config = AdapterConfig(router_hidden=0)
    layer = TMoLELinear(torch.nn.Linear(32, 32), config, Routing(config))
    assert 0.95 < layer.router.weight.std().item() < 1.05  # nn.init.normal_: N(0, 1)
    bound = 1 / config.task_dim ** 0.5  # the bias keeps nn.Linear's uniform(-1/sqrt(d), 1/sqrt(d))
    assert layer.router.bias.abs().max().item() <= bound


def test_adapter_with_linear_router_trains():
    backbone = load_backbone("tiny", INFO, dtype="float32")
    adapter = attach_adapter(backbone, small_config(router_hidden=0), token_ids=[INFO.embed_id])
    adapter.train()
    for _, _, layer in adapter.projections():
        torch.nn.init.normal_(layer.B, std=0.1)
    out = adapter(input_ids=torch.randint(5, INFO.vocab_size, (3, 8)), task_ids=[task_index(n) for n in EMBEDDING])
    out.logits.square().mean().backward()
    q = adapter.model.model.layers[0].self_attn.q_proj
    assert q.router.weight.grad is not None and torch.count_nonzero(q.router.weight.grad[:4]) > 0


def per_expert_layer(p=0.3):
    layer, routing, table, config = make_layer((2, 2, 2), dropout=p, dropout_per_expert=True)
    return layer.train(), routing, table, config


def test_per_expert_dropout_draws_one_mask_per_expert():
    layer, routing, table, config = per_expert_layer()
    route(routing, table, GENERATIVE)  # experts 2..5 allowed
    r, n = config.rank, 4
    with torch.no_grad():  # every expert reads input dims 0..r-1 of a ones input: its hidden block is its mask
        layer.A.zero_()
        for j in range(6):
            layer.A[j * r:(j + 1) * r, :r] = torch.eye(r, dtype=torch.float64)
    hidden, rescale = layer.expert_inputs(torch.ones(4, 50, 24, dtype=torch.float64), 2 * r, 6 * r)
    assert rescale == 1 / 0.7
    blocks = [hidden[..., k * r:(k + 1) * r] for k in range(n)]
    assert all(set(block.unique().tolist()) == {0.0, 1.0} for block in blocks)
    assert all(not torch.equal(blocks[a], blocks[b]) for a in range(n) for b in range(a + 1, n))
    assert all(0.25 < 1 - block.mean().item() < 0.35 for block in blocks)
    layer.dropout_per_expert = False  # the shared mask: every block the same
    hidden, _ = layer.expert_inputs(torch.ones(4, 50, 24, dtype=torch.float64), 2 * r, 6 * r)
    assert all(torch.equal(hidden[..., :r], hidden[..., k * r:(k + 1) * r]) for k in range(n))


@pytest.mark.parametrize("form", ["mask", "fused"])
def test_per_expert_dropout_is_the_formula_with_each_experts_mask(monkeypatch, form):
    """o = W0 x + (alpha/r) sum_j v_j B_j A_j (x * keep_j / (1 - p)), keep_j drawn for the allowed experts in order."""
    as_on_a_gpu(monkeypatch, form)
    layer, routing, table, config = per_expert_layer()
    ids = route(routing, table, GENERATIVE)
    x = torch.randn(len(GENERATIVE), 6, 24, dtype=torch.float64)
    torch.manual_seed(11)
    out = layer(x)
    torch.manual_seed(11)
    if form == "fused":
        every_dropped = F.dropout(x.expand(4, *x.shape), 0.3, training=True)
    else:
        every_dropped = x * (torch.rand((4, *x.shape), dtype=torch.float64) >= 0.3).double() / 0.7
    r, plain = config.rank, layer.base_layer(x)
    for b, task_id in enumerate(ids.tolist()):
        v = torch.softmax(layer.router(table.weight[task_id])[2:], -1)
        for k, j in enumerate(range(2, 6)):
            dropped = every_dropped[k, b]
            a_j, b_j = layer.A[j * r:(j + 1) * r], layer.B[:, j * r:(j + 1) * r]
            plain[b] += (config.alpha / r) * v[k] * (dropped @ a_j.T @ b_j.T)
    assert ((out - plain).norm() / plain.norm()).item() < 1e-10


def test_per_expert_dropout_keeps_the_expectation_and_is_off_in_eval():
    layer, routing, table, config = per_expert_layer()
    draws = 4000  # the same 3 samples 4000 times in one batch
    route(routing, table, EMBEDDING * draws)
    x = torch.randn(len(EMBEDDING), 4, 24, dtype=torch.float64).repeat(draws, 1, 1)
    layer.eval()
    expected = layer(x)
    assert torch.equal(layer(x), expected)  # no randomness in eval mode
    layer.dropout_per_expert = False
    assert torch.equal(layer(x), expected)  # the same output as the shared-mask layer
    layer.dropout_per_expert = True
    layer.train()
    torch.manual_seed(3)
    with torch.no_grad():
        mean = layer(x).view(draws, len(EMBEDDING), 4, 20).mean(0)
    expected, base = expected[:len(EMBEDDING)], layer.base_layer(x[:len(EMBEDDING)])
    assert ((mean - expected).norm() / (expected - base).norm()).item() < 0.03
