"""`attach_adapter`: a backbone wrapped in the adapter its config names (TMoLE or plain LoRA).

The one module that knows both modes, so `recfound.model.adapter` (the interface) imports neither.
"""

from __future__ import annotations

from typing import Sequence

from recfound.model.adapter import Adapter, AdapterConfig, TaskList
from recfound.model.backbone import Backbone, find_projections
from recfound.model.lora import LoraAdapter
from recfound.model.state import base_fingerprint
from recfound.model.tmole import TMoLEAdapter


def attach_adapter(backbone: Backbone, config: AdapterConfig, token_ids: Sequence[int] = (),
                   tasks: TaskList | None = None) -> Adapter:
    """Wrap the backbone's targeted projections in place (TMoLE or plain LoRA per `config.mode`).
    `token_ids` (e.g. the `<embed>` id) get trainable embedding rows, as do rows past the base
    vocabulary. `tasks` defaults to the task registry."""
    find_projections(backbone.model, config.targets)
    fingerprint = base_fingerprint(backbone.model)
    cls = TMoLEAdapter if config.mode == "tmole" else LoraAdapter
    return cls(backbone, config, tasks or TaskList.registered(), token_ids, fingerprint)
