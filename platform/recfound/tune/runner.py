"""Run a sweep: the parent MLflow run, the Tuner (new or restored), the trial table and the best config.

`run_sweep(spec)` runs every trial of a loaded `SweepSpec` on the Ray cluster of this process (the
cluster of a `ray job submit`, or a private local one) and returns a `SweepReport`. The sweep's
folder, `<storage>/<name>`, holds Tune's experiment state and `sweep_state.json` (the definition,
the parent run, whether the sweep ended). Started again with the same name:

- an unfinished sweep (the driver died or was interrupted) is restored with `Tuner.restore`: trials
  that ended are kept, the others run (an interrupted trial resumes its training from its latest
  checkpoint), under the same parent run; the definition must be the one it was started with;
- a finished sweep is refused (its results stay), unless `overwrite`, which starts it afresh.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from recfound.config import ConfigError
from recfound.data.atomic import atomic_write_bytes
from recfound.redact import without_password, without_passwords
from recfound.tune.report import (TrialRow, ablation_table, best_row, trial_row, trial_table, variant_summary,
                                  write_best_config)
from recfound.tune.spec import SweepSpec, absolute_paths
from recfound.tune.trial import best_run_name, trial_run_name

STATE_FILE = "sweep_state.json"
BEST_CONFIG_FILE = "best_config.yaml"
TRIALS_FILE = "trials.txt"
TRIALS_JSON = "trials.json"
ABLATION_FILE = "ablation.txt"
SPEC_FILE = "sweep.yaml"


@dataclass
class SweepReport:
    """How a sweep ended: its trials, the best one and where the best config was written."""

    spec: SweepSpec
    parent_run_id: str
    tracking_uri: str
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_config_path: Path | None = None
    interrupted: bool = False
    resumed: bool = False
    seconds: float = 0.0

    def table(self) -> str:
        return trial_table(self.spec, self.rows, self.best)

    def ablation(self) -> str | None:
        """The Table-4-shaped comparison, for a sweep with variants: a row per trial, then each variant's
        mean and spread when it ran more than once (over `run.seed`, say)."""
        if not self.spec.variants:
            return None
        summary = variant_summary(self.spec, self.rows)
        table = ablation_table(self.spec, self.rows)
        return table if summary is None else f"{table}\n\nover the trials of each variant (mean ± sd):\n{summary}"


@dataclass
class SweepState:
    """What `<experiment dir>/sweep_state.json` keeps between drivers."""

    definition: dict[str, Any]
    parent_run_id: str | None = None
    finished: bool = False

    @classmethod
    def read(cls, path: Path) -> SweepState | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["definition"], data.get("parent_run_id"), data.get("finished", False))

    def write(self, path: Path) -> None:
        data = {"definition": self.definition, "parent_run_id": self.parent_run_id, "finished": self.finished}
        atomic_write_bytes(path, json.dumps(data, indent=1, default=str).encode("utf-8"))


def run_sweep(spec: SweepSpec, overwrite: bool = False) -> SweepReport:
    """Run (or resume) the sweep; see the module doc. Raises before any trial starts for a path the
    base config reads that does not exist, a finished sweep of that name, or a changed definition."""
    from recfound.cluster import ray_session

    started = time.perf_counter()
    for config in _variant_configs(spec):
        config.verify_paths()
    folder = spec.experiment_dir()
    state = _state(spec, folder, overwrite)
    _print_plan(spec, folder, resumed=state.parent_run_id is not None)
    with ray_session(log_to_driver=True):
        _prepare_corpora(spec)
        report = _run(spec, folder, state)
    report.seconds = time.perf_counter() - started
    _print_summary(report, folder)
    return report


def _variant_configs(spec: SweepSpec) -> list[Any]:
    """The base config with each variant (or alone), its paths made absolute against the sweep's folder."""
    configs = [spec.base_config.with_overrides(v) for v in spec.variants.values()] or [spec.base_config]
    return [absolute_paths(config, spec.workdir) for config in configs]


def _state(spec: SweepSpec, folder: Path, overwrite: bool) -> SweepState:
    """The state to continue from: fresh, or the unfinished sweep's (same definition)."""
    from recfound import tracking

    path = folder / STATE_FILE
    previous = SweepState.read(path)
    definition = json.loads(json.dumps(spec.to_dict(), default=str))
    if previous is not None and overwrite:
        if not previous.finished and previous.parent_run_id:
            tracking.finish_run_quietly(spec.tracking_uri, previous.parent_run_id, "KILLED")
        shutil.rmtree(folder)
        previous = None
    if previous is None:
        return SweepState(definition)
    if previous.finished:
        raise FileExistsError(f"sweep {spec.name!r} already finished (results in {folder}): choose another name "
                              "(--set name=...) or pass --overwrite to run it again")
    if previous.definition != definition:
        changed = sorted(key for key in set(definition) | set(previous.definition)
                         if definition.get(key) != previous.definition.get(key))
        raise ConfigError("", f"the unfinished sweep {spec.name!r} in {folder} was started with a different "
                              f"definition (changed: {', '.join(changed)}); restore the file, choose another name "
                              "(--set name=...) or pass --overwrite to start again", spec.source)
    return previous


def _run(spec: SweepSpec, folder: Path, state: SweepState) -> SweepReport:
    """The parent run (new, or the unfinished sweep's again), the trials, the results."""
    from recfound import tracking
    from recfound.tracking.store import client

    config = spec.base_config
    tracking_uri = spec.tracking_uri
    resumed = state.parent_run_id is not None
    if resumed:
        client(tracking_uri).update_run(state.parent_run_id, status="RUNNING")
    else:
        state.parent_run_id = tracking.start_run(tracking_uri, config.mlflow.experiment, spec.name, spec.params(),
                                                 tags={"recfound.sweep": spec.name,
                                                       "mlflow.note.content": spec.description,
                                                       **tracking.source_tags()},
                                                 artifact_root=spec.artifact_root)
    folder.mkdir(parents=True, exist_ok=True)
    state.write(folder / STATE_FILE)
    report = SweepReport(spec, state.parent_run_id, tracking_uri, resumed=resumed)
    try:
        results = _tuner(spec, folder, state.parent_run_id).fit()
        report.rows = _rows(spec, results)
        report.interrupted = any(row.status == "unfinished" for row in report.rows)
        _close_child_runs(tracking_uri, config.mlflow.experiment, report)
        _write_results(spec, folder, report)
    except BaseException as error:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        tracking.finish_run_quietly(tracking_uri, state.parent_run_id, status)
        raise
    if report.interrupted:
        tracking.finish_run(tracking_uri, state.parent_run_id, "KILLED")
        return report
    _log_parent(spec, folder, report)
    tracking.finish_run(tracking_uri, state.parent_run_id, "FINISHED" if report.best else "FAILED")
    state.finished = True
    state.write(folder / STATE_FILE)
    return report


HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node (1 unit)
HEAD_NODE_SHARE = 0.001  # room for any number of concurrent trials


def _tuner(spec: SweepSpec, folder: Path, parent_run_id: str) -> Any:
    """A new Tuner, or the restored one of an unfinished sweep (same trainable, fresh object refs)."""
    from ray import tune

    from recfound.tune.space import param_space, search_algorithm, trial_scheduler
    from recfound.tune.leftovers import ReleaseStoppedTrials
    from recfound.tune.trainable import run_trial

    # A trial's own process is a training driver: it runs on the head node, like a job's driver, where the
    # run storage and the cluster's MLflow server are; its workers go wherever their resources are (GPU
    # nodes on a cloud cluster).
    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=spec, parent_run_id=parent_run_id),
                                    {"CPU": spec.resources.trial_cpus, HEAD_NODE_RESOURCE: HEAD_NODE_SHARE})
    if tune.Tuner.can_restore(str(folder)):
        print(f"== resuming the unfinished sweep {spec.name!r} from {folder}", flush=True)
        return tune.Tuner.restore(str(folder), trainable=trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)
    return tune.Tuner(
        trainable, param_space=param_space(spec),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=search_algorithm(spec),
                                    scheduler=trial_scheduler(spec), num_samples=spec.trials,
                                    max_concurrent_trials=spec.max_concurrent_trials,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=spec.name, storage_path=str(spec.storage_path()),
                                  callbacks=[ReleaseStoppedTrials(spec)],
                                  failure_config=tune.FailureConfig(max_failures=0)))


def trial_dirname(trial: Any) -> str:
    """A trial's folder under the sweep's: its id (Tune's default spells the parameters out)."""
    return trial.trial_id


def _rows(spec: SweepSpec, results: Any) -> list[TrialRow]:
    rows = []
    for result in results:
        trial_id = Path(result.path).name
        params = {key: value for key, value in (result.config or {}).items()}
        error = None if result.error is None else _error_line(result.error)
        ended = result.error is not None or bool((result.metrics or {}).get("done"))  # finished or stopped
        rows.append(trial_row(trial_id, params, dict(result.metrics or {}), error, spec, ended))
    return sorted(rows, key=lambda row: row.trial_id)


def _close_child_runs(tracking_uri: str, experiment: str, report: SweepReport) -> None:
    """Child runs still RUNNING (trials ASHA stopped, interrupted attempts) become KILLED; each row gets
    its child run's id (the last one of its name, for a trial that ran twice)."""
    from recfound.tracking.store import client

    mlflow_client = client(tracking_uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    runs = [] if found is None else mlflow_client.search_runs(
        [found.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{report.parent_run_id}'",
        order_by=["attributes.start_time ASC"], max_results=10_000)
    by_name = {}
    for run in runs:
        if run.info.status == "RUNNING":
            mlflow_client.set_terminated(run.info.run_id, status="KILLED")
        by_name[run.info.run_name] = run.info.run_id
    report.rows = [row if row.run_id else _with_run_id(row, by_name.get(trial_run_name(report.spec, row.trial_id)))
                   for row in report.rows]


def _with_run_id(row: TrialRow, run_id: str | None) -> TrialRow:
    return replace(row, run_id=run_id)


def _write_results(spec: SweepSpec, folder: Path, report: SweepReport) -> None:
    """trials.txt, trials.json, ablation.txt (with variants), sweep.yaml and the best config."""
    report.best = best_row(spec, report.rows)
    atomic_write_bytes(folder / TRIALS_FILE, (report.table() + "\n").encode("utf-8"))
    atomic_write_bytes(folder / TRIALS_JSON, json.dumps([row.to_dict() for row in report.rows], indent=1,
                                                        default=str).encode("utf-8"))
    atomic_write_bytes(folder / SPEC_FILE, yaml.safe_dump(spec.to_dict(), sort_keys=False).encode("utf-8"))
    if report.ablation() is not None:
        atomic_write_bytes(folder / ABLATION_FILE, (report.ablation() + "\n").encode("utf-8"))
    if report.best is not None and not report.interrupted:
        report.best_config_path = write_best_config(spec, report.best, folder / BEST_CONFIG_FILE)


def _log_parent(spec: SweepSpec, folder: Path, report: SweepReport) -> None:
    """The trial table, the definition, the comparison and the best config on the parent run."""
    from recfound import tracking
    from recfound.tracking.store import client

    files = [folder / name for name in (TRIALS_FILE, TRIALS_JSON, SPEC_FILE, ABLATION_FILE, BEST_CONFIG_FILE)]
    tracking.log_artifact_files(report.tracking_uri, report.parent_run_id, [f for f in files if f.is_file()])
    mlflow_client = client(report.tracking_uri)
    counts = {status: sum(row.status == status for row in report.rows) for status in {r.status for r in report.rows}}
    for status, count in counts.items():
        mlflow_client.set_tag(report.parent_run_id, f"trials.{status.replace(' ', '_')}", str(count))
    if report.best is None:
        return
    mlflow_client.log_metric(report.parent_run_id, f"best/{spec.metric}", report.best.metric)
    mlflow_client.set_tag(report.parent_run_id, "best.trial", report.best.trial_id)
    if report.best.run_id:
        mlflow_client.set_tag(report.parent_run_id, "best.run_id", report.best.run_id)
    for key, value in report.best.params.items():
        mlflow_client.set_tag(report.parent_run_id, f"best.{key}", json.dumps(value))


def _prepare_corpora(spec: SweepSpec) -> None:
    """Write each synthetic corpus the trials read before they start (trials would race to write it)."""
    from recfound.data.prepare import prepare_corpus

    for config in _variant_configs(spec):
        if config.data.synth_scale is not None:
            prepare_corpus(config)


def _print_plan(spec: SweepSpec, folder: Path, resumed: bool) -> None:
    base = spec.base_config
    print(f"== sweep {spec.name!r} ({spec.source}){': ' + spec.description if spec.description else ''}\n"
          f"{spec.total_trials()} trial(s), search {spec.search}, scheduler {spec.scheduler}, metric "
          f"{spec.metric} ({spec.mode}), at most {spec.max_concurrent_trials} at a time; each trial: "
          f"{base.train.steps} steps on {base.train.describe_workers()} worker(s) x {base.train.cpus_per_worker} CPU"
          f"{' + 1 GPU' if base.train.use_gpu else ''}, the trial itself {spec.resources.trial_cpus} CPU\n"
          f"{'resuming from' if resumed else 'folder'}: {folder}", flush=True)
    for dimension in spec.space:
        print(f"  {dimension.path}: {dimension.describe()}")
    for name, overrides in spec.variants.items():
        print(f"  variant {name}: {json.dumps(without_passwords(overrides)) if overrides else '(the base config)'}")


def _print_summary(report: SweepReport, folder: Path) -> None:
    from recfound import tracking

    spec = report.spec
    print(f"\n== sweep {spec.name!r}: {len(report.rows)} trial(s) in {report.seconds:.0f}s")
    print(report.table())
    if report.ablation() is not None:
        print(f"\n{report.ablation()}")
    for row in report.rows:
        if row.error:
            print(f"trial {row.trial_id} failed: {row.error}")
    if report.interrupted:
        print(f"\ninterrupted: run the same command again to resume the sweep from {folder}")
    elif report.best_config_path is not None:
        print(f"\nbest trial: {report.best.trial_id} ({spec.metric} = {report.best.metric:.4f})")
        print(f"best config: {report.best_config_path}  (recfound train --config {report.best_config_path}; "
              f"run.name {best_run_name(spec)})")
    else:
        print("\nno trial finished: no best config")
    print(f"MLflow parent run {report.parent_run_id} at {without_password(report.tracking_uri)}")
    print(f"open the MLflow UI: {tracking.ui_command(report.tracking_uri)}")


def _error_line(error: BaseException) -> str:
    """The last line of an error (a trial's traceback ends with the exception itself)."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(error).__name__
