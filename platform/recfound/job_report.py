"""What a finished training job reports: the per-task loss table, the before/after evaluation table, and
the summary printed at the end of the run (and saved as the run's summary.txt)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfound import storage
from recfound.progress import format_table
from recfound.redact import without_password
from recfound.tasks import get_task


@dataclass
class TrainingReport:
    """What a finished run produced (paths, the MLflow run, the registered version, per-task losses).
    `run_dir` and the adapters are local (for a run on an object store: copies in its staging folder);
    `location` is where the run's files live."""

    run_dir: Path
    location: str
    run_id: str | None
    tracking_uri: str
    history: dict[str, Any]
    final_adapter: Path
    merged_adapter: Path | None
    registered: Any = None
    first_val_loss: dict[str, float] = field(default_factory=dict)
    last_val_loss: dict[str, float] = field(default_factory=dict)
    last_ratio: dict[str, float] = field(default_factory=dict)
    merged_steps: int = 0
    seconds: float = 0.0
    evaluations: dict[str, Any] = field(default_factory=dict)  # role ("test", "test_base") -> ModelEvaluation
    baselines: dict[str, Any] = field(default_factory=dict)  # role ("test_popularity") -> ModelEvaluation
    evaluation_error: str | None = None  # why the evaluation after training failed (the run itself did not)
    test_scores: dict[str, float] = field(default_factory=dict)  # task -> the trained model's headline metric
    test_averages: dict[str, float] = field(default_factory=dict)  # kind -> mean of test_scores over its tasks
    # task -> (low, high): the 95% interval of the trained model's change from the base (recfound.eval.paired)
    change_intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def stored(self, local: Path) -> str:
        """Where a file of the run folder (given by its local copy) lives."""
        return storage.join(storage.normalize(self.location), *local.relative_to(self.run_dir).parts)

    def table(self) -> str:
        """Per task: kind, the validation loss at the first and the last point, the change, the final ratio."""
        rows = [[task, get_task(task).kind.value, self.first_val_loss[task], self.last_val_loss[task],
                 f"{100 * (self.last_val_loss[task] / self.first_val_loss[task] - 1):+.1f}%", self.last_ratio[task]]
                for task in self.last_val_loss]
        return format_table(["task", "kind", "val loss (first)", "val loss (last)", "change", "final ratio"], rows)


def summary_text(report: TrainingReport, split: str) -> str:
    """The loss table and, when evaluated, the before/after table of the `split` metrics (and, on a root
    built from logs, the full-catalog table of the models beside the baselines)."""
    if report.evaluation_error:
        return f"{report.table()}\n\nevaluation failed: {report.evaluation_error}"
    if not report.evaluations:
        return report.table()
    from recfound.eval.job import roles
    from recfound.eval.report import (before_after_table, catalog_report, cut_answers_line, improved_tasks,
                                      noise_line)

    trained_role, base_role = roles(split)
    before, after = report.evaluations.get(base_role), report.evaluations[trained_role]
    text = f"{report.table()}\n\n{before_after_table(before, after, report.change_intervals)}"
    if before is not None:
        improved = improved_tasks(before, after)
        misses = [task for task in after.headline() if task not in improved]
        text += f"\ntrained model better than the base on {len(improved)} of {len(after.headline())} tasks"
        text += f" (not on {', '.join(misses)})" if misses else ""
    if report.change_intervals:
        text += f"\n{noise_line(report.change_intervals)}"
    if cut := cut_answers_line(after):  # the trained model's only: an untrained base model rambles to the limit
        text += f"\n{cut}"
    if report.baselines:
        models = [e for e in (before, after) if e is not None]
        text += f"\n\n{catalog_report(models, list(report.baselines.values()))}"
    return text


def print_summary(report: TrainingReport, split: str) -> None:
    from recfound import tracking

    print("\n== summary", flush=True)
    print(summary_text(report, split))
    print(f"\nrun folder: {report.location}  ({report.seconds:.0f}s)")
    print(f"final adapter: {report.stored(report.final_adapter)}")
    if report.merged_adapter:
        print(f"merged adapter (TIES over the last {report.merged_steps} checkpoints): "
              f"{report.stored(report.merged_adapter)}")
    if report.registered is not None and report.registered.version is not None:
        print(f"registered: {report.registered.registered_uri}")
        print(f"serve it: {tracking.serve_command(report.tracking_uri, report.registered.registered_uri)}")
    print(f"MLflow run {report.run_id} at {without_password(report.tracking_uri)}")
    print(f"open the MLflow UI: {tracking.ui_command(report.tracking_uri)}")
