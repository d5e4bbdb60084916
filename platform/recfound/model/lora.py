"""Plain LoRA through peft (the paper's "w/o TMoLE" ablation) behind the `Adapter` interface.

peft injects its layers in place (no PeftModel wrapper), so the HF model keeps its forward; task
routing is validated (one kind per batch, like TMoLE) and otherwise ignored.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from recfound.model.adapter import Adapter, AdapterConfig, TaskList
from recfound.model.backbone import Backbone
from recfound.tasks import Kind


class LoraAdapter(Adapter):
    """One LoRA of rank r on every targeted projection, shared by all tasks."""

    def __init__(self, backbone: Backbone, config: AdapterConfig, tasks: TaskList, token_ids: Sequence[int],
                 fingerprint: str) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        super().__init__(backbone, config, tasks, token_ids, fingerprint)
        lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                          target_modules=list(config.targets))
        inject_adapter_in_model(lora, self.model)
        for name, param in self.model.named_parameters():
            param.requires_grad_("lora_" in name)

    def set_tasks(self, task_ids) -> Kind:
        return self.tasks.kind_of(self._task_tensor(task_ids))

    def wrapped_type(self) -> type[nn.Module]:
        from peft.tuners.lora import LoraLayer

        return LoraLayer

    @torch.no_grad()
    def merged_weight(self, wrapped: nn.Module, task: str) -> torch.Tensor:
        self.task_id(task)
        weight = wrapped.base_layer.weight
        return (weight.double() + wrapped.get_delta_weight("default").double()).to(weight.dtype)
