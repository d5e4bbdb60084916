"""The routing report: each task's gate over the experts of every TMoLE projection, and the
task-by-task cosine similarity of those gates (the paper's Figure 2), as data and as PNG heatmaps."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from recfound import storage
from recfound.model.tmole import TMoLEAdapter

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


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


GROUPS = {"E": "embedding", "S": "shared", "G": "generative"}  # expert label prefix -> group


def describe_projections(names: Sequence[str]) -> str:
    """'8 TMoLE projections (q_proj, k_proj, v_proj, o_proj in 2 layers)' of the report's projection names."""
    modules = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in names))
    layers = {found.group(1) for name in names if (found := re.search(r"\.layers\.(\d+)\.", name))}
    where = f" in {len(layers)} layer{'s' * (len(layers) != 1)}" if layers else ""
    return f"{len(names)} TMoLE projection{'s' * (len(names) != 1)} ({', '.join(modules)}{where})"


def mean_gates(report: Mapping[str, Any]) -> list[list[float]]:
    """[tasks x experts]: each task's gate averaged over the report's projections."""
    return [[sum(column) / len(column) for column in zip(*report["gates"][task])] for task in report["tasks"]]


def _heatmap(figure: Figure, axes: Axes, values: Sequence[Sequence[float]], columns: Sequence[str], rows: Sequence[str],
             cmap: str, limits: tuple[float, float], label: str, blank_zero: bool = False) -> None:
    """One annotated heatmap panel with its colour bar (`label`); exact zeros left blank if asked."""
    low, high = limits
    image = axes.imshow(values, cmap=cmap, vmin=low, vmax=high, aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=60, ha="right")
    axes.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, value in enumerate(row):
            if not (blank_zero and value == 0):
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small",
                          color="white" if value > (low + high) / 2 else "black")
    figure.colorbar(image, ax=axes, label=label)


def routing_figure(report: Mapping[str, Any], title: str | None = None) -> Figure:
    """A matplotlib Figure of the report: each task's mean gate per expert (left) and the task-by-task
    cosine similarity of the gates (right, the paper's Figure 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks, experts, similarity = report["tasks"], report["experts"], report["similarity"]
    rows = [f"{task} [{kind[0].upper()}]" for task, kind in zip(tasks, report["kinds"])]
    size = 1.6 + 0.55 * len(tasks)
    figure = Figure(figsize=(2.4 + 0.55 * len(experts) + size + 1.2, size + 0.8), layout="constrained")
    FigureCanvasAgg(figure)
    gate_axes, similarity_axes = figure.subplots(1, 2, width_ratios=[len(experts) + 2, len(tasks) + 2])
    gates = mean_gates(report)
    _heatmap(figure, gate_axes, gates, experts, rows, "Blues", (0.0, max(max(row) for row in gates)),
             "mean gate (router softmax weight)", blank_zero=True)
    for boundary in _group_boundaries(experts):
        gate_axes.axvline(boundary, color="grey", linewidth=0.8)
    gate_axes.set_xlabel("expert (" + ", ".join(f"{letter}: {group}" for letter, group in GROUPS.items()) + ")")
    gate_axes.set_ylabel("task [E: embedding, G: generative]")
    gate_axes.set_title("gate per expert, blank: masked for the task's kind", fontsize="medium")
    low = min(min(row) for row in similarity)  # trained gates are often all similar: spread the colours over the range
    _heatmap(figure, similarity_axes, similarity, tasks, tasks, "Reds", (min(low, 0.99), 1.0),
             "cosine similarity of the tasks' gates")
    similarity_axes.set_xlabel("task")
    similarity_axes.set_ylabel("task")
    similarity_axes.set_title("task-by-task similarity of the gates (concatenated over projections)",
                              fontsize="medium")
    figure.suptitle(f"{title or 'routing'}\na task's gates come from its task embedding alone (the same for every "
                    f"record of the task); left: averaged over the {describe_projections(report['layers'])}")
    return figure


def _group_boundaries(experts: Sequence[str]) -> list[float]:
    """x positions between consecutive experts of different groups (E1 E2 | S1 | G1 ...)."""
    return [i + 0.5 for i in range(len(experts) - 1) if experts[i][0] != experts[i + 1][0]]


def plot_routing_similarity(report: Mapping[str, Any], path: storage.Location, title: str | None = None) -> None:
    """Draw `routing_figure` and write it to `path` (PNG, a local path or URI, whole or not at all)."""
    buffer = io.BytesIO()
    routing_figure(report, title).savefig(buffer, format="png", dpi=120)
    storage.write_bytes(path, buffer.getvalue())
