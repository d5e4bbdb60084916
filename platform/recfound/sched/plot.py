"""The sample ratio of every task over the training steps (the paper's Figure 3), as a PNG."""

from __future__ import annotations

import io
from typing import Any, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from recfound import storage


def plot_ratios(history: Mapping[str, Any], path: storage.Location, title: str | None = None) -> None:
    """Draw one panel per task kind from a scheduler `history()` and write it to `path` (PNG,
    a local path or URI, written whole or not at all). The ratios are drawn as steps: each value holds from its
    step until the next one; the warm-up is shaded. The x axis spans the whole run, the lines end
    at the last step that can be served so far."""
    kinds = history["kinds"]
    figure = Figure(figsize=(9, 3.2 * len(kinds)), layout="constrained")
    FigureCanvasAgg(figure)
    end = history["last_ready_step"] + 1
    for axes, (kind, record) in zip(figure.subplots(len(kinds), 1, squeeze=False)[:, 0], kinds.items()):
        steps = list(record["steps"]) + [end]  # the last value holds through the last servable step
        for task, column in zip(record["tasks"], zip(*record["ratios"])):
            axes.stairs(column, steps, label=task, baseline=None, linewidth=1.5)
        if history["warmup_steps"] > 0 and history["mode"] == "s2sched":
            axes.axvspan(1, history["warmup_steps"] + 1, color="0.9", zorder=0, label="warm-up")
        axes.set(title=f"{kind} tasks", xlabel="training step", ylabel="sample ratio",
                 xlim=(1, history["total_steps"] + 1))
        axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        figure.suptitle(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    storage.write_bytes(path, buffer.getvalue())
