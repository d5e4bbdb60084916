"""TMoLE: task-wise mixture of low-rank experts on every targeted projection (Eqs. 1-2 of the paper).

`o = W0 x + (alpha/r) * sum_j v_j B_j A_j dropout(x)`, experts ordered [E | S | G], gate
`v = softmax(mask(router(e_task)))` where the mask keeps E+S for embedding tasks and S+G for
generative ones. The experts of one projection are stored concatenated (A: [N*r, d_in],
B: [d_out, N*r]); a batch holds tasks of one kind, so its allowed experts are one contiguous slice
and a forward is two rank-(n_allowed*r) matmuls with the per-sample gate scaling the middle.
The router is an MLP (the paper), or one linear layer with `router_hidden=0` (the authors' code);
dropout draws one mask for all experts, or one per expert with `dropout_per_expert` (the authors'
layer calls its dropout inside the loop over experts), which costs a batched matmul over n_allowed
masked copies of the input instead of the first fused matmul.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recfound.model.adapter import Adapter, AdapterConfig, TaskList
from recfound.model.backbone import Backbone, find_projections
from recfound.tasks import Kind


class Routing:
    """What every TMoLE layer of one model reads during a forward: the batch's task embeddings
    (looked up once per model forward) and the slice of experts its kind may use."""

    def __init__(self, config: AdapterConfig) -> None:
        e, s, g = config.embedding_experts, config.shared_experts, config.generative_experts
        self.allowed_by_kind = {Kind.EMBEDDING: slice(0, e + s), Kind.GENERATIVE: slice(e, e + s + g)}
        self.task_ids: torch.Tensor | None = None
        self.allowed: slice | None = None
        self.task_embedding: torch.Tensor | None = None


def dropout_parts(x: torch.Tensor, p: float, fused: bool) -> tuple[torch.Tensor, float]:
    """(dropout(x) as computed, the 1/(1-p) rescale still to apply to it).

    `fused` (on GPUs): torch's dropout, one kernel that rescales itself, so 1.0 is left to apply (the mask
    form below is three kernels there, its bool-by-bf16 multiply unvectorised: 3x the time in an H200
    profile). Otherwise (CPUs): one random pass and one multiply, the rescale left to the caller's gate
    (nn.Dropout's Bernoulli sampling costs 1.2-1.5x there).
    """
    if fused:
        return F.dropout(x, p, training=True), 1.0
    return x * (torch.rand_like(x) >= p), 1.0 / (1.0 - p)


class TMoLELinear(nn.Module):
    """One projection with N LoRA experts and its own router (the task table is model-wide)."""

    def __init__(self, base_layer: nn.Linear, config: AdapterConfig, routing: Routing) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.rank, self.scale, self.routing = config.rank, config.alpha / config.rank, routing
        n, r = config.num_experts, config.rank
        factory = dict(device=base_layer.weight.device, dtype=base_layer.weight.dtype)
        self.A = nn.Parameter(torch.empty(n * r, base_layer.in_features, **factory))
        self.B = nn.Parameter(torch.zeros(base_layer.out_features, n * r, **factory))
        for j in range(n):  # each expert's A initialised like a peft LoRA A (Kaiming-uniform, fan-in d_in)
            nn.init.kaiming_uniform_(self.A[j * r:(j + 1) * r], a=math.sqrt(5))
        if config.router_hidden:
            self.router = nn.Sequential(nn.Linear(config.task_dim, config.router_hidden, **factory), nn.GELU(),
                                        nn.Linear(config.router_hidden, n, **factory))
        else:  # the authors' router: one linear layer, its weight drawn from N(0, 1) as their LoRA layer does
            self.router = nn.Linear(config.task_dim, n, **factory)
            nn.init.normal_(self.router.weight)
        self.dropout, self.dropout_per_expert = config.dropout, config.dropout_per_expert

    def gates(self, task_embedding: torch.Tensor, allowed: slice) -> torch.Tensor:
        """[batch, n_allowed] softmax over the allowed experts (the masked ones are exactly 0)."""
        logits = self.router(task_embedding)[:, allowed]
        return logits.softmax(-1, dtype=torch.promote_types(logits.dtype, torch.float32)).to(logits.dtype)

    def dropped(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(dropout(x), the 1/(1-p) rescale still to apply to it: see `dropout_parts`)."""
        if not self.training or self.dropout == 0:
            return x, 1.0
        return dropout_parts(x, self.dropout, fused=x.is_cuda)

    def expert_inputs(self, x: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, float]:
        """(A_j dropout(x) of the experts in rows lo:hi of A, concatenated [.., hi - lo]; the dropout's rescale
        still to apply). With dropout_per_expert each expert gets its own mask."""
        if not (self.dropout_per_expert and self.training and self.dropout > 0):
            dropped, rescale = self.dropped(x)
            return F.linear(dropped, self.A[lo:hi]), rescale
        n, d_in = (hi - lo) // self.rank, x.shape[-1]
        masked, rescale = dropout_parts(x.expand(n, *x.shape), self.dropout, fused=x.is_cuda)
        masked = masked.reshape(n, -1, d_in)  # [experts, tokens, d_in]
        hidden = torch.bmm(masked, self.A[lo:hi].view(n, self.rank, d_in).transpose(1, 2))  # [experts, tokens, r]
        return hidden.transpose(0, 1).reshape(*x.shape[:-1], hi - lo), rescale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        routing = self.routing
        if routing.task_embedding is None:
            raise RuntimeError("TMoLE needs the batch's tasks: call adapter.set_tasks(task_ids) before the forward")
        rows = routing.task_embedding.shape[0]
        if rows not in (1, x.shape[0]):
            raise ValueError(f"set_tasks gave {rows} task ids for a batch of {x.shape[0]} rows "
                             "(give one per row, or one for all)")
        lo, hi = routing.allowed.start * self.rank, routing.allowed.stop * self.rank
        hidden, rescale = self.expert_inputs(x, lo, hi)
        experts = routing.allowed.stop - routing.allowed.start
        gate = self.gates(routing.task_embedding, routing.allowed) * (self.scale * rescale)
        # Per sample, the gate of expert j scales its r columns of the middle activation, seen as [.., experts, r].
        hidden = hidden.view(*hidden.shape[:-1], experts, self.rank) * gate.view(
            rows, *(1,) * (x.dim() - 2), experts, 1)
        base = self.base_layer(x)
        # addmm adds the experts' product into the base output in one pass (no extra [.., d_out] sum).
        out = torch.addmm(base.reshape(-1, base.shape[-1]), hidden.reshape(-1, hi - lo), self.B[:, lo:hi].T)
        return out.view(base.shape)


class TMoLEAdapter(Adapter):
    """The model with TMoLE on every targeted projection, one task table and the shared routing."""

    def __init__(self, backbone: Backbone, config: AdapterConfig, tasks: TaskList, token_ids: Sequence[int],
                 fingerprint: str) -> None:
        super().__init__(backbone, config, tasks, token_ids, fingerprint)
        self.routing = Routing(config)
        weight = self.model.get_input_embeddings().weight
        self.task_table = nn.Embedding(len(tasks.names), config.task_dim, device=weight.device, dtype=weight.dtype)
        for name in find_projections(self.model, config.targets):
            parent_name, _, attr = name.rpartition(".")
            parent = self.model.get_submodule(parent_name)
            setattr(parent, attr, TMoLELinear(getattr(parent, attr), config, self.routing))
        # Looked up at the start of every decoder forward (through the module call, so sharded
        # parameters are gathered), whether the caller runs the causal LM or only its base model.
        self.model.base_model.register_forward_pre_hook(self._lookup_tasks)

    def _lookup_tasks(self, module: nn.Module, args: tuple) -> None:
        if self.routing.task_ids is not None:
            self.routing.task_embedding = self.task_table(self.routing.task_ids)

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """Snapshot the routing when a checkpointed layer runs forward; reinstate it for its recompute."""
        routing = self.routing
        snapshot = (routing.task_ids, routing.allowed, routing.task_embedding)
        return nullcontext(), self._routed_as(snapshot)

    @contextmanager
    def _routed_as(self, snapshot: tuple) -> Iterator[None]:
        routing = self.routing
        current = (routing.task_ids, routing.allowed, routing.task_embedding)
        routing.task_ids, routing.allowed, routing.task_embedding = snapshot
        try:
            yield
        finally:
            routing.task_ids, routing.allowed, routing.task_embedding = current

    def set_tasks(self, task_ids) -> Kind:
        ids = self._task_tensor(task_ids)
        kind = self.tasks.kind_of(ids)
        self.routing.task_ids = ids.to(self.task_table.weight.device)
        self.routing.allowed = self.routing.allowed_by_kind[kind]
        return kind

    def wrapped_type(self) -> type[nn.Module]:
        return TMoLELinear

    def full_gate(self, module: TMoLELinear, task: str) -> torch.Tensor:
        """[N] gate of one projection for `task` over all experts (0 where masked)."""
        task_id = self.task_id(task)
        allowed = self.routing.allowed_by_kind[self.tasks.kinds[task_id]]
        embedding = self.task_table.weight[task_id:task_id + 1]
        full = torch.zeros(self.config.num_experts, dtype=embedding.dtype, device=embedding.device)
        full[allowed] = module.gates(embedding, allowed)[0]
        return full

    @torch.no_grad()
    def task_gates(self, task: str) -> dict[str, torch.Tensor]:
        """{projection name: [N] gate} for one task, every TMoLE projection in model order."""
        return {name: self.full_gate(module, task) for name, module in self.model.named_modules()
                if isinstance(module, TMoLELinear)}

    @torch.no_grad()
    def merged_weight(self, wrapped: TMoLELinear, task: str) -> torch.Tensor:
        columns = self.full_gate(wrapped, task).repeat_interleave(self.config.rank) * wrapped.scale
        weight = wrapped.base_layer.weight
        delta = (wrapped.B.double() * columns.double()) @ wrapped.A.double()
        return (weight.double() + delta).to(weight.dtype)
