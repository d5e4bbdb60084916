"""The `recfound` command: `data synth|validate|convert|build|tokenizer`, `train`, `demo`, `merge`, `export`,
`eval run|compare`, `sweep`, `cluster check`, `mlflow-server start|stop`."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from recfound.cloud.commands import add_cloud_commands
from recfound.console import quiet_process, set_verbose
from recfound.data.reader import POLICIES, SPLITS, RecordError, SkipReport

SCALE_NAMES = ("tiny", "small", "paper")  # recfound.data.synth.SCALES, without importing the generator
LOG_SOURCES = ("movielens", "amazon")  # recfound.data.logs.sources.SOURCES, without importing the readers
TRACKING_URI_HELP = "MLflow (default: $MLFLOW_TRACKING_URI, else .cache/runs/mlflow.db)"
MODEL_HELP = "RUN_DIR[:init|final|merged], an adapter file, or models:/NAME/VERSION (or ALIAS, latest)"


def _integer_where(rule_name: str) -> Callable[[str], int]:
    """An argparse type: an integer that passes `recfound.config`'s Rule `rule_name` (imported only when an
    option is given, so that `recfound --help` stays fast)."""
    def parse(text: str) -> int:
        import recfound.config

        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        rule = getattr(recfound.config, rule_name)
        if not rule.test(value):
            raise argparse.ArgumentTypeError(f"{rule.text} (got {value})")
        return value
    return parse


SEED_TYPE = _integer_where("SEED")


def _text_encoding(name: str) -> str:
    """An argparse type: a text encoding Python knows."""
    try:
        is_text = codecs.lookup(name)._is_text_encoding  # rot13, hex, zlib, ... are codecs but not text encodings
    except LookupError:
        is_text = False
    if not is_text:
        raise argparse.ArgumentTypeError(f"unknown text encoding {name!r} (e.g. utf-8, latin-1, cp1252)")
    return name


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="create, check and convert instruction records").add_subparsers(
        dest="data_command", required=True)

    synth = data.add_parser("synth", help="write a deterministic synthetic corpus for all tasks")
    synth.add_argument("--out", type=Path, required=True, help="folder to write <split>/<TASK>.jsonl into")
    synth.add_argument("--seed", type=SEED_TYPE, default=0, help="the same seed writes the same corpus (default 0)")
    synth.add_argument("--scale", default="tiny", choices=SCALE_NAMES, help="paper: Table 1's sizes")
    _add_verbose(synth)
    synth.set_defaults(func=cmd_synth)

    validate = data.add_parser("validate", help="check every record; print per-task counts per split")
    validate.add_argument("root", help="dataset folder, or URI (s3://bucket/prefix), holding "
                                       "<split>/<TASK>.jsonl|.parquet")
    validate.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, metavar="SPLIT",
                          help=f"the splits to check (default: {' '.join(SPLITS)})")
    validate.add_argument("--policy", choices=POLICIES, default="strict",
                          help="strict: stop at the first bad record; skip: drop and count bad records")
    _add_verbose(validate)
    validate.set_defaults(func=cmd_validate)

    convert = data.add_parser("convert", help="convert the RecFound authors' released JSONL files to ours")
    convert.add_argument("inputs", nargs="+", help="released-format JSONL/Parquet files or URIs (any tasks mixed)")
    convert.add_argument("--out", type=Path, required=True,
                         help="dataset folder to write <split>/<TASK>.jsonl into (one file per task)")
    convert.add_argument("--split", required=True, choices=SPLITS, help="the split the inputs belong to")
    convert.add_argument("--policy", choices=POLICIES, default="strict",
                         help="strict: stop at the first bad record; skip: drop and count bad records")
    _add_verbose(convert)
    convert.set_defaults(func=cmd_convert)

    _add_build_command(data)

    tokenizer = data.add_parser("tokenizer", help="build a small BPE tokenizer from a dataset's train split")
    tokenizer.add_argument("root", help="dataset folder or URI whose train split the tokenizer learns from")
    tokenizer.add_argument("--out", type=Path, required=True, help="tokenizer folder to write (tokenizer.json, ...)")
    tokenizer.add_argument("--vocab-size", type=_integer_where("CORPUS_VOCAB"), default=2048,
                           help="tokens in the vocabulary (default 2048)")
    _add_verbose(tokenizer)
    tokenizer.set_defaults(func=cmd_tokenizer)


def _add_build_command(data: argparse._SubParsersAction) -> None:
    from recfound.data.logs.settings import MAX_OPTIONS, Settings

    defaults = Settings()
    build = data.add_parser("build", help="build instruction records (13-task format plus auxiliary tasks in "
                                          "tasks.yaml) from interaction logs, split per user by time")
    build.add_argument("input", type=Path, help="a MovieLens folder (ML-100K: u.data, u.item; ml-latest: ratings.csv, "
                                                "movies.csv), or an Amazon reviews file (.jsonl or .jsonl.gz)")
    build.add_argument("--source", required=True, choices=LOG_SOURCES, help="the layout family of the input")
    build.add_argument("--meta", type=Path, help="Amazon item metadata (.jsonl or .jsonl.gz); needed with amazon")
    build.add_argument("--out", type=Path, required=True, help="dataset folder to write (replaced whole, and only, "
                                                               "when the build succeeds)")
    build.add_argument("--seed", type=SEED_TYPE, default=defaults.seed,
                       help=f"every random choice (default {defaults.seed})")
    build.add_argument("--min-interactions", type=int, default=defaults.min_interactions, metavar="N",
                       help=f"drop users with fewer distinct items (default {defaults.min_interactions}, the least)")
    build.add_argument("--history", type=int, default=defaults.history, metavar="N",
                       help=f"items shown in a history (default {defaults.history})")
    build.add_argument("--options", type=int, default=defaults.options, metavar="N",
                       help=f"options of SR and MIM records (default {defaults.options}, at most {MAX_OPTIONS})")
    build.add_argument("--negatives", type=int, default=defaults.negatives, metavar="N",
                       help=f"negatives of embedding records (default {defaults.negatives})")
    build.add_argument("--per-user", type=int, default=defaults.per_user, metavar="N",
                       help=f"train records per user and task (default {defaults.per_user}; 0: every train event)")
    build.add_argument("--encoding", type=_text_encoding,
                       help="MovieLens text encoding (default: latin-1 for ML-100K's u.item, UTF-8 for the CSV files)")
    _add_verbose(build)
    build.set_defaults(func=cmd_build)


def cmd_build(args: argparse.Namespace) -> None:
    from recfound.data.logs.build import build_logs
    from recfound.data.logs.settings import Settings

    settings = Settings(seed=args.seed, min_interactions=args.min_interactions, history=args.history,
                        options=args.options, negatives=args.negatives, per_user=args.per_user)
    report = build_logs(args.source, args.input, args.out, settings, args.meta, args.encoding)
    print(report.summary())
    print(f"wrote {sum(sum(c.values()) for c in report.records.values()):,} records to {args.out} "
          f"in {report.seconds:.1f} s")


def cmd_synth(args: argparse.Namespace) -> None:
    from recfound.data.synth import synthesize
    from recfound.progress import format_table

    counts = synthesize(args.out, args.seed, args.scale)
    tasks = list(next(iter(counts.values())))
    print(format_table(["task", *counts], [[t, *(counts[s][t] for s in counts)] for t in tasks]))
    print(f"wrote {sum(sum(c.values()) for c in counts.values()):,} records to {args.out}")


def cmd_validate(args: argparse.Namespace) -> None:
    from recfound.data.validate import validate_dataset

    summary = validate_dataset(args.root, tuple(args.splits), args.policy)
    print(summary.table())
    _print_skips(summary.report)
    for split, names in summary.missing.items():
        if names:
            print(f"note: {split} has no file for {', '.join(names)}")


def _print_skips(report: SkipReport) -> None:
    if report.total:
        print(f"skipped {report.total} bad record(s); first reasons:")
        for reason in report.reasons:
            print(f"  {reason}")


def cmd_convert(args: argparse.Namespace) -> None:
    from recfound.data.validate import convert_released

    report = SkipReport()
    counts = convert_released(args.inputs, args.out, args.split, args.policy, report)
    for name, count in sorted(counts.items()):
        print(f"{name}: {count} records -> {args.out / args.split / (name + '.jsonl')}")
    _print_skips(report)


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from recfound.data.corpus_text import corpus_texts
    from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer

    folder = build_corpus_tokenizer(corpus_texts(args.root), args.out, args.vocab_size)
    print(f"tokenizer with {load_tokenizer(folder)[1].vocab_size} tokens -> {folder}")


VERBOSE_HELP = "also show what Ray, DeepSpeed, MLflow and transformers print (progress bars, INFO lines)"


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """`--verbose` after the command too; SUPPRESS keeps `recfound --verbose CMD` from being reset."""
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    _add_verbose(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field by its dotted path, e.g. sched.window=32 (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoints of an earlier run with the same run.name")


def _add_train_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train, merge and register a model (Ray Train + DeepSpeed + S2Sched)")
    train.add_argument("--config", help="run config YAML, a local file or a bucket URI (default: the embedded "
                                        "CPU demo settings)")
    _add_config_arguments(train)
    train.set_defaults(func=cmd_train)
    demo = sub.add_parser("demo", help="the embedded end-to-end run on this machine (no GPU needed): tiny corpus, "
                                       "tiny model, 2 CPU workers, S2Sched, merge, MLflow registry; with --source, "
                                       "on tasks built from your interaction logs, beside two baselines")
    demo.add_argument("input", type=Path, nargs="?", help="with --source: a MovieLens folder or an Amazon reviews "
                                                          "file, as `recfound data build` reads them")
    demo.add_argument("--source", choices=LOG_SOURCES, help="build the demo's tasks from these logs (into "
                                                           "<run.output_dir>/<run.name>-data) instead of the "
                                                           "synthetic corpus")
    demo.add_argument("--meta", type=Path, help="Amazon item metadata (.jsonl or .jsonl.gz); needed with amazon")
    _add_config_arguments(demo)
    demo.set_defaults(func=cmd_train, config=None, demo=True)


def _demo_config(args: argparse.Namespace):
    """The demo's config: on the logs of --source (built first) or, without, the embedded defaults."""
    from recfound.config import load_config

    if (args.source is None) != (args.input is None):
        raise ValueError("recfound demo: give --source and the logs together (e.g. recfound demo --source "
                         "movielens ml-100k/), or neither for the synthetic corpus")
    if args.source is None:
        return load_config(None, args.overrides)
    from recfound.logs_demo import logs_demo_config

    return logs_demo_config(args.source, args.input, args.meta, args.overrides)


def cmd_train(args: argparse.Namespace) -> None:
    from recfound.config import RunConfig, load_config
    from recfound.job import run_training

    config = _demo_config(args) if getattr(args, "demo", False) else load_config(args.config, args.overrides)
    # The demo replaces its own earlier run; any other run name needs --overwrite.
    demo_run = getattr(args, "demo", False) and config.run.name == RunConfig().run.name
    run_training(config, overwrite=args.overwrite or demo_run)


def _add_merge_command(sub: argparse._SubParsersAction) -> None:
    from recfound.config import MERGE_METHODS, MergeSection

    merge = sub.add_parser("merge", help="TIES-merge a run's last checkpoints (or chosen ones) into one adapter")
    merge.add_argument("inputs", nargs="+", metavar="RUN_OR_CHECKPOINT",
                       help="one run folder, or several checkpoint folders or adapter files")
    merge.add_argument("--base", metavar="FILE", help="the adapter the checkpoints started from "
                       "(default: the run's adapter_init.safetensors)")
    merge.add_argument("--out", metavar="FILE",
                       help="the merged adapter file (default: <run>/merged.safetensors)")
    merge.add_argument("--last", type=int, metavar="C", help="merge a run's last C checkpoints by step (default 3)")
    merge.add_argument("--density", type=float, default=0.8, metavar="D",
                       help="fraction of each checkpoint's changes kept, in (0, 1] (default 0.8)")
    merge.add_argument("--method", choices=MERGE_METHODS, default=MergeSection().method,
                       help="ties: standard TIES, as peft's (default); authors: as the RecFound authors' merge "
                            "script (docs/merge.md)")
    _add_verbose(merge)
    merge.set_defaults(func=cmd_merge, unwinds_on_signals=True)


def cmd_merge(args: argparse.Namespace) -> None:
    from recfound.merge import merge_adapter_files, plan_merge
    from recfound.model.state import read_adapter

    plan = plan_merge(args.inputs, base=args.base, out=args.out, last=args.last)
    out = merge_adapter_files(plan.base, plan.checkpoints, plan.out, args.density, args.method)
    info = read_adapter(out)[0]["merge"]
    sources = ", ".join(s["file"] if s["step"] is None else f"step {s['step']}" for s in info["sources"])
    method = "TIES as the authors merge" if info["method"] == "authors" else "TIES"
    print(f"merged {len(info['sources'])} checkpoint(s) ({sources}) onto {plan.base}: {method}, "
          f"density {info['density']}; {info['tensors']} tensors, "
          f"{info['changed']:.1%} of the entries changed from the base")
    print(f"wrote {out}")


def _add_export_command(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="write one task's dense model (the adapter merged into the weights) "
                                           "as a plain Hugging Face folder that transformers loads")
    export.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    export.add_argument("--task", required=True, help="the task whose weights to write, e.g. SA or Q2I")
    export.add_argument("--out", type=Path, required=True,
                        help="the folder to write (config.json, model.safetensors, the tokenizer files)")
    export.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    export.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    _add_verbose(export)
    export.set_defaults(func=cmd_export, unwinds_on_signals=True)


def cmd_export(args: argparse.Namespace) -> None:
    from recfound.eval.commands import BASE, model_source
    from recfound.tasks import get_task

    if args.model.startswith(BASE):
        raise ValueError(f"{args.model}: a bare backbone has no adapter to merge; it is a plain model already")
    from recfound.data.atomic import check_replaceable
    from recfound.model.state import EXPORT_MARKER

    if args.out.exists() and not args.out.is_dir():
        raise FileExistsError(f"{args.out}: is a file; choose a folder to write the model into")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{args.out}: exists and is not empty; choose another folder, or pass --overwrite "
                              "to replace an earlier export")
    check_replaceable(args.out, EXPORT_MARKER)  # --overwrite replaces an earlier export, never other files
    get_task(args.task)  # an unknown task is refused before any model is loaded
    source = model_source(args.model, _tracking_uri(args.tracking_uri)[0], None, 0)
    out = source.export_dense(args.task, args.out)
    files = sorted(item.name for item in out.iterdir())
    print(f"exported {source.label} for task {args.task} to {out}: {', '.join(files)}")


def _add_eval_commands(sub: argparse._SubParsersAction) -> None:
    from recfound.config import EVAL_SCORINGS, EvalSection

    defaults = EvalSection()
    evaluate = sub.add_parser("eval", help="score models with the paper's per-task metrics; compare logged runs"
                              ).add_subparsers(dest="eval_command", required=True)
    run = evaluate.add_parser("run", help="evaluate models side by side on one split (docs/evaluation.md)")
    run.add_argument("models", nargs="+", metavar="MODEL",
                     help=f"{MODEL_HELP}, or base:SPEC (the bare backbone, with --tokenizer)")
    run.add_argument("--data", required=True, help="dataset folder (or s3://, gs:// URI) holding <split>/<TASK>.jsonl")
    run.add_argument("--split", default=defaults.split, choices=SPLITS, help=f"(default {defaults.split})")
    run.add_argument("--tasks", nargs="+", help="tasks to score (default: every task file of the split)")
    run.add_argument("--max-records", type=int, help="at most this many records per task (default: all)")
    run.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens,
                     help=f"longest generated answer, in tokens (default {defaults.max_new_tokens})")
    run.add_argument("--batch-size", type=int, default=defaults.batch_size,
                     help=f"records per forward pass (default {defaults.batch_size})")
    run.add_argument("--k", type=int, default=defaults.k, help="cut-off of NDCG@k / MRR@k")
    run.add_argument("--protocol", default=defaults.protocol, choices=("sampled", "full", "both"),
                     help="retrieval: sampled same-category negatives (the authors'), the full pool, or both")
    run.add_argument("--negatives", type=int, default=defaults.sampled_negatives, help="sampled negatives per query")
    run.add_argument("--scorer", default=defaults.scorer, help="BERTScore encoder: minilm, none, or a HF folder")
    run.add_argument("--scoring", default=defaults.scoring, choices=EVAL_SCORINGS,
                     help="ours (default), or authors: the rules of the authors' eval scripts (docs/evaluation.md)")
    run.add_argument("--workers", type=int, default=defaults.workers, help="Ray tasks to shard over (0: here)")
    run.add_argument("--gpu", action="store_true", help="one GPU per worker")
    run.add_argument("--seed", type=SEED_TYPE, default=0, help="sampled negatives; the seed of a preset backbone")
    run.add_argument("--tokenizer", help="tokenizer of a base:SPEC model (a folder, smollm2 or a .gguf file)")
    run.add_argument("--out", type=Path, help="write scores.json, tables.txt and the answers into this folder")
    run.add_argument("--log", action="store_true", help="log the evaluation to a new MLflow run (recfound-eval)")
    run.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    _add_verbose(run)
    run.set_defaults(func=cmd_eval_run, unwinds_on_signals=True)
    compare = evaluate.add_parser("compare", help="put the evaluations logged in MLflow runs side by side")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="MLflow run ids or run names")
    compare.add_argument("--tracking-uri", help=TRACKING_URI_HELP)
    _add_verbose(compare)
    compare.set_defaults(func=cmd_eval_compare)


def _tracking_uri(given: str | None) -> tuple[str, str | None]:
    """(tracking URI, artifact root): `given`, else $MLFLOW_TRACKING_URI, else the embedded SQLite store
    of the default run folder with its artifact folder (as a training run's defaults)."""
    from recfound.config import ConfigError, RunConfig

    config = RunConfig() if not given else RunConfig().with_overrides({"mlflow.tracking_uri": given})
    try:
        return config.tracking_uri(), config.artifact_root()
    except ConfigError:  # a path for a URI: refused by the commands that open the store (check_store_to_read)
        return given or os.environ["MLFLOW_TRACKING_URI"], None


# `eval run`'s flags by the `eval` config field each sets (its errors name the flag).
EVAL_RUN_FLAGS = {"max_records": "--max-records", "max_new_tokens": "--max-new-tokens", "batch_size": "--batch-size",
                  "k": "--k", "sampled_negatives": "--negatives", "scorer": "--scorer", "workers": "--workers"}


def cmd_eval_run(args: argparse.Namespace) -> None:
    from recfound.config import ConfigError, EvalSection
    from recfound.eval.commands import run_evaluation

    try:
        options = EvalSection(split=args.split, max_records=args.max_records, max_new_tokens=args.max_new_tokens,
                              batch_size=args.batch_size, k=args.k, protocol=args.protocol,
                              sampled_negatives=args.negatives, scorer=args.scorer, scoring=args.scoring,
                              workers=args.workers)
    except ConfigError as error:  # named by the flag the user typed, not by the config field behind it
        raise ConfigError(EVAL_RUN_FLAGS.get(error.key, error.key), error.reason) from None
    tracking_uri, artifact_root = _tracking_uri(args.tracking_uri)
    run_evaluation(args.models, args.data, options, args.tasks, tracking_uri, args.tokenizer, args.seed, args.gpu,
                   args.out, args.log, artifact_root)


def cmd_eval_compare(args: argparse.Namespace) -> None:
    from recfound.eval.commands import compare_runs

    print(compare_runs(args.runs, _tracking_uri(args.tracking_uri)[0]))


def _add_sweep_command(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run a Ray Tune sweep of training runs (Optuna / grid / random search, "
                                         "ASHA); an unfinished sweep of the same name resumes")
    sweep.add_argument("sweep_file", type=Path, metavar="SWEEP.yaml", help="a sweep definition (see sweeps/)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the sweep file, e.g. trials=4, overrides.train.steps=10, "
                            "'space.sched.window={type: int, low: 4, high: 32}' (repeatable)")
    sweep.add_argument("--overwrite", action="store_true",
                       help="discard an earlier sweep of the same name (finished or not) and start again")
    sweep.add_argument("--check", action="store_true", help="only check the sweep file and print its plan")
    _add_verbose(sweep)
    sweep.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> None:
    from recfound.tune import load_sweep

    spec = load_sweep(args.sweep_file, args.overrides)  # every error is raised here, before any trial
    if args.check:
        print(f"{args.sweep_file}: ok: {spec.total_trials()} trial(s), search {spec.search}, scheduler "
              f"{spec.scheduler}, metric {spec.metric} ({spec.mode}); folder {spec.experiment_dir()}")
        return
    from recfound.tune import run_sweep

    if run_sweep(spec, overwrite=args.overwrite).interrupted:
        raise SystemExit(130)  # resumable: the same command continues it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recfound", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_train_commands(sub)
    _add_merge_command(sub)
    _add_export_command(sub)
    _add_eval_commands(sub)
    _add_sweep_command(sub)
    add_cloud_commands(sub)
    return parser


def _raised_by(err: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether `err` is an exception class of one of `packages` (without importing them)."""
    return any(kind.__module__.split(".")[0] in packages for kind in type(err).__mro__)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `recfound` console command; returns the exit status."""
    from recfound.no_space import full_disk_error
    from recfound.train.errors import TrainingError
    from recfound.train.interrupt import RunInterrupted, interruption, stop_on_signals

    args = build_parser().parse_args(argv)
    set_verbose(args.verbose)
    quiet_process()
    # A command that writes files (the data commands, merge, export, eval run) stopped by SIGTERM (or Ctrl-C)
    # unwinds like an error: its staging folder or temporary file goes with it.
    unwinds = getattr(args, "data_command", None) or getattr(args, "unwinds_on_signals", False)
    signals = stop_on_signals() if unwinds else contextlib.nullcontext()
    try:
        with signals:
            args.func(args)
    except RunInterrupted as stopped:
        print(f"recfound: {stopped}", file=sys.stderr)
        return stopped.exit_code
    except Exception as err:  # noqa: BLE001 - each known kind becomes one line; anything else is re-raised
        stopped, full = interruption(err), full_disk_error(err)
        if stopped is not None:  # raised inside a library's call, which wrapped it
            print(f"recfound: {stopped}", file=sys.stderr)
            return stopped.exit_code
        if full is not None:  # a full disk surfaces as many other errors (SQLite's, Ray Train's)
            message = full.strerror
        elif isinstance(err, (RecordError, OSError, ValueError, KeyError, TrainingError)):
            message = err.args[0] if isinstance(err, KeyError) else str(err)
        elif _raised_by(err, ("mlflow", "sqlalchemy")):  # e.g. a store that cannot be opened, read or written
            from recfound.error_chain import first_line
            from recfound.redact import without_passwords_in_text

            message = f"MLflow: {without_passwords_in_text(first_line(err))}"
        else:
            raise
        print(f"recfound: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
