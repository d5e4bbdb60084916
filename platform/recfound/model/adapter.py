"""The interface both adapter modes (TMoLE and plain peft LoRA) implement, so training never branches.

An `Adapter` owns the HF model (its projections wrapped in place, so `adapter.model(input_ids=...,
attention_mask=...)` keeps the HF signature), the trainable token rows (`<embed>` and any rows the
tokenizer added) and the task list. `set_tasks(task_ids)` routes the next forwards; it stays in
effect until the next call (generation sees it too). With `enable_checkpointing()`, a layer's
recomputation in backward sees the routing of its own forward.

`recfound.model.attach.attach_adapter` builds the adapter of `AdapterConfig.mode`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Iterator, Sequence

import torch
from torch import nn

from recfound.model.backbone import Backbone
from recfound.tasks import Kind, all_tasks

MODES = ("tmole", "lora")


@dataclass(frozen=True)
class AdapterConfig:
    """Adapter hyper-parameters (paper defaults). The expert counts, task and router sizes are TMoLE's only."""

    mode: str = "tmole"
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    rank: int = 16
    alpha: float = 64.0
    dropout: float = 0.1
    embedding_experts: int = 2
    shared_experts: int = 2
    generative_experts: int = 2
    task_dim: int = 512
    router_hidden: int = 256  # the paper says "an MLP" and gives no width; 0: one linear layer (the authors')
    dropout_per_expert: bool = False  # one dropout mask per expert (the authors' layer) instead of one for all

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"adapter mode {self.mode!r}: expected one of {', '.join(MODES)}")
        object.__setattr__(self, "targets", tuple(self.targets))
        if self.rank < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"adapter rank must be >= 1 and dropout in [0, 1) (got {self.rank}, {self.dropout})")
        for name in ("alpha", "task_dim"):
            if not getattr(self, name) > 0:
                raise ValueError(f"adapter {name} must be > 0, got {getattr(self, name)!r}")
        if not self.router_hidden >= 0:
            raise ValueError(f"adapter router_hidden must be >= 0 (0: one linear layer), got {self.router_hidden!r}")
        counts = (self.embedding_experts, self.shared_experts, self.generative_experts)
        if self.mode == "tmole" and (min(counts) < 0 or self.embedding_experts + self.shared_experts == 0
                                     or self.shared_experts + self.generative_experts == 0):
            raise ValueError(f"TMoLE experts E, S, G = {counts}: each kind needs at least one allowed expert")

    @property
    def num_experts(self) -> int:
        return self.embedding_experts + self.shared_experts + self.generative_experts

    def to_dict(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


@dataclass(frozen=True)
class TaskList:
    """The tasks an adapter routes (row i of the task table is `names[i]`) and their kinds."""

    names: tuple[str, ...]
    kinds: tuple[Kind, ...] = field(repr=False)

    @classmethod
    def registered(cls) -> "TaskList":
        tasks = all_tasks()
        return cls(tuple(t.name for t in tasks), tuple(t.kind for t in tasks))

    def kind_of(self, task_ids: torch.Tensor) -> Kind:
        """The one kind of a batch's tasks; a batch mixing kinds, or an unknown id, is refused."""
        ids = task_ids.tolist()
        if not ids:
            raise ValueError("empty task_ids")
        bad = [i for i in ids if not 0 <= i < len(self.names)]
        if bad:
            raise ValueError(f"task ids {sorted(set(bad))} out of range: the adapter knows {len(self.names)} tasks")
        kinds = {self.kinds[i] for i in ids}
        if len(kinds) > 1:
            raise ValueError(f"a batch must hold tasks of one kind; got {sorted(k.value for k in kinds)}")
        return kinds.pop()


class TokenRows(nn.Module):
    """Trainable replacements for a few embedding rows (the `<embed>` token, added tokens).

    The base embedding stays frozen (weight decay and optimizer state never touch it): a forward hook
    swaps these rows in for their tokens, and, when the output embedding is tied to the input one,
    for their logits too (so a dense export that writes the rows into the tied matrix is exact).
    """

    def __init__(self, model: nn.Module, token_ids: Sequence[int]) -> None:
        super().__init__()
        embedding = model.get_input_embeddings()
        ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long, device=embedding.weight.device)
        slot = torch.full((embedding.num_embeddings,), -1, dtype=torch.long, device=ids.device)
        slot[ids] = torch.arange(len(ids), device=ids.device)
        self.register_buffer("ids", ids, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.rows = nn.Parameter(embedding.weight.detach()[ids].clone())
        embedding.register_forward_hook(self._embed_hook)
        head = model.get_output_embeddings()
        self.tied = head is not None and head.weight is embedding.weight
        if self.tied:
            head.register_forward_hook(self._logits_hook)

    def _embed_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        slot = self.slot[args[0]]
        return torch.where((slot >= 0).unsqueeze(-1), self.rows[slot.clamp(min=0)].to(output.dtype), output)

    def _logits_hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        own = args[0] @ self.rows.to(args[0].dtype).T
        if module.bias is not None:
            own = own + module.bias[self.ids]
        return output.index_copy(-1, self.ids, own.to(output.dtype))

    @contextmanager
    def written_into(self, model: nn.Module) -> Iterator[None]:
        """Temporarily write the rows into the model's embedding matrix (for a dense export)."""
        weight = model.get_input_embeddings().weight
        saved = weight.detach()[self.ids].clone()
        with torch.no_grad():
            weight[self.ids] = self.rows.to(weight.dtype)
        try:
            yield
        finally:
            with torch.no_grad():
                weight[self.ids] = saved


class Adapter(nn.Module):
    """Common base: the wrapped HF model, token rows, tasks, trainable state and a dense merge."""

    def __init__(self, backbone: Backbone, config: AdapterConfig, tasks: TaskList, token_ids: Sequence[int],
                 fingerprint: str) -> None:
        super().__init__()
        self.model = backbone.model
        self.config = config
        self.tasks = tasks
        self.base_id = backbone.base_id
        self.fingerprint = fingerprint
        self.init_id: str | None = None  # set by a training run: the fingerprint of the state it starts from
        vocab = self.model.get_input_embeddings().num_embeddings
        self.token_rows = TokenRows(self.model, sorted(set(token_ids) | set(range(backbone.base_vocab, vocab))))

    def set_tasks(self, task_ids) -> Kind:
        """Route the following forwards by `task_ids` ([batch], one kind); returns that kind."""
        raise NotImplementedError

    def enable_checkpointing(self, every_n_layers: int = 1) -> None:
        """Activation checkpointing of the decoder layers whose backward recompute of each layer sees
        the routing its forward saw (non-reentrant `torch.utils.checkpoint` with `context_fn`), even
        when other batches were routed in between, e.g. queries, documents and a generative batch
        before one backward. Use this rather than the HF model's own switch."""
        options = {"use_reentrant": False, "context_fn": self.checkpoint_contexts}
        # transformers renamed the switch (`gradient_checkpointing_enable`, deprecated since) after 5.17.
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(options, every_n_layers=every_n_layers)
        else:
            self.model.gradient_checkpointing_enable(options, every_n_layers=every_n_layers)

    def checkpoint_contexts(self) -> tuple[AbstractContextManager, AbstractContextManager]:
        """(forward, recompute) contexts of one checkpointed layer call; plain LoRA has no routing."""
        return nullcontext(), nullcontext()

    def forward(self, *args, task_ids=None, **kwargs):
        """`set_tasks(task_ids)` when given, then the HF model's forward."""
        if task_ids is not None:
            self.set_tasks(task_ids)
        return self.model(*args, **kwargs)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every trainable tensor by name (what `recfound.model.state` saves and merging averages)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` (same names and shapes as `trainable_state()`) into the adapter."""
        own = self.trainable_state()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"adapter state does not fit: missing {missing[:5]}, unexpected {extra[:5]}")
        wrong = [f"{n} {tuple(state[n].shape)} vs {tuple(p.shape)}"
                 for n, p in own.items() if state[n].shape != p.shape]
        if wrong:
            raise ValueError(f"adapter state shapes differ: {'; '.join(wrong[:5])}")
        with torch.no_grad():
            for name, param in own.items():
                param.copy_(state[name])

    def projections(self) -> list[tuple[nn.Module, str, nn.Module]]:
        """(parent, attribute, wrapped projection) for every wrapped Linear, in model order."""
        found = []
        for name, module in self.model.named_modules():
            if isinstance(module, self.wrapped_type()):
                parent_name, _, attr = name.rpartition(".")
                found.append((self.model.get_submodule(parent_name), attr, module))
        return found

    def wrapped_type(self) -> type[nn.Module]:
        """The module class this mode puts in place of each targeted projection."""
        raise NotImplementedError

    def merged_weight(self, wrapped: nn.Module, task: str) -> torch.Tensor:
        """The dense weight `W0 + delta` of one wrapped projection for `task`."""
        raise NotImplementedError

    def task_id(self, task: str) -> int:
        if task not in self.tasks.names:
            raise KeyError(f"unknown task {task!r}; the adapter knows {', '.join(self.tasks.names)}")
        return self.tasks.names.index(task)

    def _task_tensor(self, task_ids) -> torch.Tensor:
        return torch.as_tensor(task_ids, dtype=torch.long).reshape(-1)

    @contextmanager
    def dense(self, task: str) -> Iterator[nn.Module]:
        """The HF model with every projection temporarily replaced by its merged nn.Linear for `task`
        and the token rows written into the embedding: a plain model that `save_pretrained` writes."""
        swapped = []
        try:
            with torch.no_grad():
                for parent, attr, wrapped in self.projections():
                    base = wrapped.base_layer
                    linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                       device=base.weight.device, dtype=base.weight.dtype)
                    linear.weight.copy_(self.merged_weight(wrapped, task))
                    if base.bias is not None:
                        linear.bias.copy_(base.bias)
                    setattr(parent, attr, linear)
                    swapped.append((parent, attr, wrapped))
            with self.token_rows.written_into(self.model):
                yield self.model
        finally:
            for parent, attr, wrapped in swapped:
                setattr(parent, attr, wrapped)
