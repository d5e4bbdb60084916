"""Can a backbone learn these tasks? A learning check, not a timing benchmark.

One process runs the training job's own step (`train_step`: GradCache InfoNCE for the embedding tasks,
response cross-entropy for the generative ones) with the job's learning-rate schedule and gradient
clipping, on equal shares of the chosen tasks, and reports each task's validation loss (the S2Sched
sample) and test metric before training and at evenly spaced points. It isolates what a task can learn
from the rest of a run (other tasks, S2Sched's ratios, Ray, the merge): the single-process measurements
of docs/training.md come from here. Example, on the demo's corpus and run folder:

    python bench/task_learning.py --data .cache/demo/data --run .cache/runs/recfound-demo --tasks AVE --steps 200
    python bench/task_learning.py --data .cache/demo/data --backbone smollm2 --tokenizer smollm2 --tasks AVE --steps 60

Retrieval is scored under the sampled protocol (19 same-category negatives, the evaluation's default);
free-text answers by token F1 (`--scorer minilm` for the evaluation's BERTScore). With only generative
tasks, `--embedding-batch` I2I records a step keep the embedding branch fed (`train_step` runs both).
Bad input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from recfound.config import RunConfig, parse_overrides  # noqa: E402
from recfound.data.blocks import records_table  # noqa: E402
from recfound.data.collate import collate_embedding, collate_generative  # noqa: E402
from recfound.data.mixer import TaskMixer  # noqa: E402
from recfound.data.pipeline import equal_counts  # noqa: E402
from recfound.data.streams import TokenPool  # noqa: E402
from recfound.data.tokenize import tokenize_batch  # noqa: E402
from recfound.data.tokenizer import load_tokenizer, resolve_tokenizer  # noqa: E402
from recfound.eval.data import CandidatePool, load_split  # noqa: E402
from recfound.eval.job import make_scorer  # noqa: E402
from recfound.eval.metrics import score_generative, score_retrieval  # noqa: E402
from recfound.eval.retrieval import sampled_ranks  # noqa: E402
from recfound.model.attach import attach_adapter  # noqa: E402
from recfound.model.backbone import load_backbone  # noqa: E402
from recfound.model.inference import Inference, InferenceOptions  # noqa: E402
from recfound.tasks import Kind, get_task, task_names  # noqa: E402
from recfound.train.engine import set_learning_rate  # noqa: E402
from recfound.train.step import StepOptions, train_step  # noqa: E402
from recfound.train.validation import ValidationSet  # noqa: E402

FEEDER = "I2I"  # the embedding task that feeds the embedding branch when only generative tasks are chosen
NEGATIVES = 19
# Run-config keys this script sets from its own options (a --set of them would be ignored or contradicted).
OWN_KEYS = {"train.steps": "--steps", "train.embedding_batch": "--embedding-batch",
            "train.generative_batch": "--generative-batch", "model.backbone": "--backbone",
            "data.tokenizer": "--tokenizer", "data.tasks": "--tasks", "data.root": "--data", "run.seed": "--seed",
            "eval.sampled_negatives": f"the fixed {NEGATIVES}", "eval.max_new_tokens": "--max-new-tokens",
            "eval.scorer": "--scorer"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="dataset folder holding train/, val/ and test/")
    parser.add_argument("--run", help="a run folder: its tokenizer/ and backbone/ are the defaults")
    parser.add_argument("--tokenizer", help="tokenizer folder, 'smollm2' or a .gguf (default: RUN/tokenizer)")
    parser.add_argument("--backbone", help="preset, 'smollm2', .gguf or HF folder (default: RUN/backbone)")
    parser.add_argument("--tasks", required=True, help="comma-separated task names, e.g. U2I,Q2I,I2I,SR")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--embedding-batch", type=int, default=16, help="embedding records per step")
    parser.add_argument("--generative-batch", type=int, default=16, help="generative records per step")
    parser.add_argument("--points", type=int, default=4, help="evaluations after the one before training")
    parser.add_argument("--split", default="test", choices=("test", "train", "val"), help="the split scored")
    parser.add_argument("--records", type=int, default=None,
                        help="at most this many scored records per generative task (retrieval needs its whole pool)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--scorer", default="none",
                        help="free-text answers: none (token F1), minilm, or a HF encoder folder (BERTScore)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--seed", type=int, default=0, help="adapter initialisation and record order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a run-config override, as `recfound train --set` (e.g. train.lr=2e-3)")
    args = parser.parse_args(argv)
    if not args.run and not (args.tokenizer and args.backbone):
        parser.error("give --run, or both --tokenizer and --backbone")
    if args.steps < 1 or not 1 <= args.points <= args.steps:
        parser.error("--steps must be >= 1 and --points between 1 and --steps")
    chosen = args.tasks.split(",")
    unknown = [t for t in chosen if t not in task_names()]
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(task_names())}")
    if len(set(chosen)) < len(chosen):
        parser.error(f"--tasks names a task twice: {args.tasks}")
    if all(get_task(t).kind is Kind.EMBEDDING for t in chosen):
        parser.error("choose at least one generative task: the training step runs both branches")
    for item in args.set:
        key = item.partition("=")[0].strip()
        if key in OWN_KEYS:
            parser.error(f"--set {key}: this script sets it from {OWN_KEYS[key]}")
    return args


class LearningCheck:
    """The adapter, its optimizer, the per-kind record mixers and what is scored at each point."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.config = RunConfig().with_overrides(parse_overrides(args.set), source="--set").with_overrides({
            "train.steps": args.steps, "run.seed": args.seed,  # the config refuses an eval interval above the steps
            "sched.eval_interval": min(RunConfig().sched.eval_interval, args.steps)})
        self.tokenizer = str(resolve_tokenizer(args.tokenizer or Path(args.run) / "tokenizer"))
        _, self.info = load_tokenizer(self.tokenizer)
        chosen = args.tasks.split(",")
        self.tasks = [t for t in task_names() if t in chosen]  # registry order, as the job's mixers draw
        kinds = {t: get_task(t).kind for t in self.tasks}
        self.embedding = [t for t in self.tasks if kinds[t] is Kind.EMBEDDING] or [FEEDER]
        self.generative = [t for t in self.tasks if kinds[t] is Kind.GENERATIVE]
        model = self.config.model
        backbone = load_backbone(args.backbone or Path(args.run) / "backbone", self.info, model.dtype,
                                 model.attn_implementation)
        torch.manual_seed(args.seed)  # after loading, as a training worker seeds its adapter
        self.adapter = attach_adapter(backbone, self.config.adapter_config(), [self.info.embed_id]).train()
        train = self._pools("train", self.embedding + self.generative)
        self.draws = {kind: (TaskMixer({t: train[t] for t in names}, seed=args.seed), names, size, collate)
                      for kind, names, size, collate in (
                          (Kind.EMBEDDING, self.embedding, args.embedding_batch, collate_embedding),
                          (Kind.GENERATIVE, self.generative, args.generative_batch, collate_generative))}
        self.validation = ValidationSet(self._pools("val", self.tasks), self.config.data.val_per_task,
                                        self.config.run.seed, 0, 1, self.info.pad_id, _tensors)
        self.scored = {task: records[:args.records] if kinds[task] is Kind.GENERATIVE else records
                       for task, records in load_split(args.data, args.split, self.tasks).items()}
        # each embedding task's candidate pool and sampled candidates, drawn once for every point
        self.candidates = {task: (pool, pool.sampled_candidates(NEGATIVES, self.config.run.seed)[0])
                           for task in self.tasks if kinds[task] is Kind.EMBEDDING
                           for pool in [CandidatePool.of(task, self.scored[task])]}
        self.options = StepOptions(self.config.embedding_config(), self.config.train.embedding_micro_batch,
                                   self.config.train.generative_micro_batch)
        self.params = [p for p in self.adapter.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=self.config.train.lr,
                                           weight_decay=self.config.train.weight_decay)
        self.scorer = make_scorer(args.scorer)

    def _pools(self, split: str, tasks: list[str]) -> dict[str, TokenPool]:
        limits = self.config.token_limits()
        return {task: TokenPool(task, tokenize_batch(records_table(rows, get_task(task)), self.tokenizer,
                                                     get_task(task).kind.value, limits))
                for task, rows in load_split(self.args.data, split, tasks).items()}

    def step(self, step: int) -> None:
        batches = {kind: _tensors(collate(mixer.next_step(equal_counts(size, names)).rows, self.info.pad_id))
                   for kind, (mixer, names, size, collate) in self.draws.items()}
        train_step(self.adapter, batches[Kind.EMBEDDING], batches[Kind.GENERATIVE], self.options,
                   torch.Tensor.backward, grad_scale=1.0)
        torch.nn.utils.clip_grad_norm_(self.params, self.config.train.max_grad_norm)
        set_learning_rate(SimpleNamespace(optimizer=self.optimizer), self.config.train, step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def point(self) -> dict[str, tuple[float, float, str]]:
        """{task: (validation loss, test metric value, metric name)} of the adapter now."""
        self.adapter.eval()
        sums, counts = self.validation.losses(self.adapter, self.options.embedding,
                                              self.options.embedding_micro_batch, self.options.generative_micro_batch)
        embedding = self.config.embedding
        inference = Inference.of_adapter(self.adapter, self.tokenizer, InferenceOptions(
            self.config.token_limits(), embedding.pool_instruction, embedding.bidirectional))
        scores = {}
        for task in self.tasks:
            records = self.scored[task]
            if task in self.candidates:
                pool, candidates = self.candidates[task]
                ranks = sampled_ranks(inference.embed_queries(records),
                                      inference.embed_documents(list(pool.documents), task), candidates)
                score = score_retrieval(task, ranks, protocol=f"sampled-{NEGATIVES}")
            else:
                score = score_generative(task, inference.generate(records, self.args.max_new_tokens), records,
                                         self.scorer)
            scores[task] = (sums[task] / counts[task], score.value, score.metric)
        self.adapter.train()
        return scores


def _tensors(arrays) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def table(points: list[tuple[int, dict[str, tuple[float, float, str]]]]) -> str:
    """One row per task: its metric, then `val loss / metric` at every point (step 0 = before training)."""
    header = ["task", "metric", *(f"step {step}" for step, _ in points)]
    rows = [[task, scores[2], *(f"{p[task][0]:.2f} / {p[task][1]:.3f}" for _, p in points)]
            for task, scores in points[0][1].items()]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def point_steps(steps: int, points: int) -> list[int]:
    """The steps after which the adapter is scored: `points` of them, evenly spaced, the last one `steps`."""
    return [math.ceil(k * steps / points) for k in range(1, points + 1)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        check = LearningCheck(args)
    except (OSError, ValueError, KeyError) as err:  # a missing folder, a bad --set value or record, ...
        print(f"task_learning: error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    scored_after = set(point_steps(args.steps, args.points))
    points = [(0, check.point())]
    print(f"step 0 scored in {time.perf_counter() - started:.0f}s", flush=True)
    for step in range(1, args.steps + 1):
        check.step(step)
        if step in scored_after:
            points.append((step, check.point()))
            elapsed = time.perf_counter() - started
            print(f"step {step}/{args.steps} | elapsed {elapsed:.0f}s | ETA "
                  f"{elapsed / step * (args.steps - step):.0f}s", flush=True)
    print(f"\nvalidation loss / {args.split} metric ({', '.join(check.tasks)}; {args.steps} steps, seed {args.seed})")
    print(table(points))
    finite = all(np.isfinite(v[0]) for _, p in points for v in p.values())
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
