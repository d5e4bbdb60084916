"""The routing report: each task's gate over the experts of every TMoLE projection, and the
task-by-task cosine similarity of those gates (the paper's Figure 2), as data and as a PNG heatmap."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import torch

from recfound.data.atomic import atomic_write_bytes
from recfound.model.tmole import TMoLEAdapter


def routing_report(adapter: TMoLEAdapter) -> dict[str, Any]:
    """JSON-able: tasks and kinds, expert labels ([E | S | G]), projection names, `gates[task]` =
    one [N] list per projection (0 for masked experts), and `similarity` = [tasks x tasks] cosine
    similarity of the tasks' gates concatenated over projections."""
    if not isinstance(adapter, TMoLEAdapter):
        raise TypeError(f"a routing report needs a TMoLE adapter; got {type(adapter).__name__} "
                        "(plain LoRA has no router)")
    config = adapter.config
    counts = {"E": config.embedding_experts, "S": config.shared_experts, "G": config.generative_experts}
    experts = [f"{group}{i + 1}" for group, count in counts.items() for i in range(count)]
    per_task = {task: adapter.task_gates(task) for task in adapter.tasks.names}
    layers = list(next(iter(per_task.values())))
    flat = torch.stack([torch.cat(list(gates.values())).double().cpu() for gates in per_task.values()])
    unit = flat / flat.norm(dim=1, keepdim=True)
    return {
        "tasks": list(adapter.tasks.names),
        "kinds": [kind.value for kind in adapter.tasks.kinds],
        "experts": experts,
        "layers": layers,
        "gates": {task: [g.double().cpu().tolist() for g in gates.values()] for task, gates in per_task.items()},
        "similarity": (unit @ unit.T).tolist(),
    }


def plot_routing_similarity(report: Mapping[str, Any], path: Path | str, title: str | None = None) -> Path:
    """Draw the report's task-by-task similarity as an annotated heatmap and write it to `path` (PNG, atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, similarity = report["tasks"], report["similarity"]
    size = 1.2 + 0.55 * len(tasks)
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    low = min(min(row) for row in similarity)  # trained gates are often all similar: spread the colours over the range
    image = axes.imshow(similarity, cmap="Reds", vmin=min(low, 0.99), vmax=1.0)
    axes.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right")
    axes.set_yticks(range(len(tasks)), tasks)
    for i, row in enumerate(similarity):
        for j, value in enumerate(row):
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                      color="white" if value > (1 + low) / 2 else "black")
    figure.colorbar(image, ax=axes, label="cosine similarity of gates")
    axes.set_title(title or "routing similarity between tasks")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
