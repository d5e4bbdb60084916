"""The evaluation runner: one model on one split, every task, the paper's metrics.

The model's work (generate an answer for every generative record; embed every query and every
candidate document) is cut into `workers` contiguous shards, run as Ray tasks (1 GPU each when asked,
else `cpus_per_worker` CPUs) or, with 0 workers, in this process, and gathered in order; scoring runs
here. Generation is greedy (batched, left-padded, stopping at EOS, at most `max_new_tokens`);
retrieval ranks each query's positive under the protocols of `recfound.eval.retrieval` and, on a data
root built from logs, against the whole item catalog (`recfound.eval.catalog`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from recfound.config import EvalSection
from recfound.console import quiet_worker, verbose
from recfound.eval import authors
from recfound.eval.data import CandidatePool
from recfound.eval.metrics import TaskScore, score_generative, score_retrieval
from recfound.eval.retrieval import CATALOG, PROTOCOLS, full_pool_ranks, sampled_ranks
from recfound.eval.source import ModelSource
from recfound.progress import Progress
from recfound.tasks import Kind, get_task

if TYPE_CHECKING:
    from recfound.eval.bertscore import BertScorer
    from recfound.eval.catalog import Catalog


@dataclass
class Work:
    """What one model must compute: answers, query embeddings, document embeddings (per task)."""

    generate: dict[str, list[dict]] = field(default_factory=dict)
    queries: dict[str, list[dict]] = field(default_factory=dict)
    documents: dict[str, list[str]] = field(default_factory=dict)

    def size(self) -> int:
        """Records, queries and documents in all."""
        return sum(len(v) for part in (self.generate, self.queries, self.documents) for v in part.values())

    def shards(self, count: int) -> list[Work]:
        """`count` contiguous slices of every list (some may be empty)."""
        def cut(items: list) -> list[list]:
            bounds = np.linspace(0, len(items), count + 1).round().astype(int)
            return [items[bounds[i]:bounds[i + 1]] for i in range(count)]

        parts = [Work() for _ in range(count)]
        for name in ("generate", "queries", "documents"):
            for task, items in getattr(self, name).items():
                for part, piece in zip(parts, cut(items)):
                    getattr(part, name)[task] = piece
        return parts


@dataclass
class Output:
    """What a model computed for a `Work`, in the same order, and how long it took."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # per task: answers that reached max_new_tokens
    queries: dict[str, np.ndarray] = field(default_factory=dict)
    documents: dict[str, np.ndarray] = field(default_factory=dict)
    generated_tokens: int = 0
    generate_seconds: float = 0.0
    embed_seconds: float = 0.0

    @classmethod
    def joined(cls, parts: list[Output]) -> Output:
        """The outputs of consecutive shards as one (times add up over the shards)."""
        out = cls(generated_tokens=sum(p.generated_tokens for p in parts),
                  generate_seconds=sum(p.generate_seconds for p in parts),
                  embed_seconds=sum(p.embed_seconds for p in parts))
        for task in parts[0].answers:
            out.answers[task] = [a for p in parts for a in p.answers[task]]
            out.cut[task] = sum(p.cut[task] for p in parts)
        for name in ("queries", "documents"):
            for task in getattr(parts[0], name):
                arrays = [a for p in parts if (a := getattr(p, name)[task]).size]
                getattr(out, name)[task] = np.concatenate(arrays) if arrays else np.zeros((0, 0), np.float32)
        return out


def run_work(source: ModelSource, work: Work, max_new_tokens: int, batch_size: int, device: str = "cpu",
             shard: bool = False, verbose: bool = False) -> Output:
    """Load `source` and compute `work`: in this process with a progress line per task, or as the body of
    a Ray task (`shard`) without one (the driver prints a line per finished shard) and, unless `verbose`,
    with the libraries turned down (a task's process does not inherit the driver's choice on an
    attached cluster)."""
    out = Output()
    parts = [(task, "generate", items) for task, items in work.generate.items()]
    parts += [(task, "queries", items) for task, items in work.queries.items()]
    parts += [(task, "documents", items) for task, items in work.documents.items()]
    if shard and not verbose:
        quiet_worker()
    bar = None if shard else Progress(len(parts), f"evaluating {source.label}: part", unit="items")
    with source.opened(device) as model:
        model.options = replace(model.options, batch_size=batch_size)
        for task, part, items in parts:
            started = time.perf_counter()
            if part == "generate":
                cut_before = model.cut_answers
                out.answers[task] = model.generate(items, max_new_tokens) if items else []
                out.cut[task] = model.cut_answers - cut_before
                out.generate_seconds += time.perf_counter() - started
            else:
                embed = model.embed_queries if part == "queries" else lambda texts: model.embed_documents(texts, task)
                getattr(out, part)[task] = embed(items)
                out.embed_seconds += time.perf_counter() - started
            if bar is not None:
                bar.update(1, len(items), f"{task} {part}")
        out.generated_tokens = model.generated_tokens
    return out


def _check_resources(options: EvalSection, use_gpu: bool) -> None:
    """A clear error, instead of tasks that wait forever, when no node could ever run one worker."""
    import ray

    total = ray.cluster_resources()
    if options.cpus_per_worker > total.get("CPU", 0):
        raise ValueError(f"eval.cpus_per_worker={options.cpus_per_worker} but the Ray cluster has "
                         f"{total.get('CPU', 0):g} CPUs: lower it (or eval.workers=0 to evaluate in the driver)")
    if use_gpu and total.get("GPU", 0) < 1:
        raise ValueError("evaluation on GPUs was asked for, but the Ray cluster has no GPU")


def _run_sharded(source: ModelSource, work: Work, options: EvalSection, use_gpu: bool) -> Output:
    """`work` over `options.workers` Ray tasks (or in this process with 0), progress per shard."""
    device = "cuda" if use_gpu else "cpu"
    if options.workers == 0:
        return run_work(source, work, options.max_new_tokens, options.batch_size, device)
    import ray

    _check_resources(options, use_gpu)
    # DEFAULT: never captured by a placement group of the caller (a Tune trial's bundle would not fit them)
    remote = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=1 if use_gpu else 0,
                        scheduling_strategy="DEFAULT")(run_work)
    source_ref = ray.put(source)
    shards = work.shards(options.workers)
    pending = {remote.remote(source_ref, shard, options.max_new_tokens, options.batch_size, device, True, verbose()): i
               for i, shard in enumerate(shards)}
    results: dict[int, Output] = {}
    bar = Progress(len(shards), f"evaluating {source.label}: shard", unit="items", interval=0)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            results[index] = ray.get(ready[0])
            bar.update(1, shards[index].size())
    finally:
        for ref in pending:  # a failed shard: the others are of no use
            ray.cancel(ref, force=True)
    return Output.joined([results[i] for i in range(len(shards))])


@dataclass
class ModelEvaluation:
    """One model's scores on one split: generative tasks, and embedding tasks under each protocol."""

    label: str
    generative: dict[str, TaskScore] = field(default_factory=dict)
    # protocol ("sampled", "full", "catalog") -> task -> score
    retrieval: dict[str, dict[str, TaskScore]] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)
    throughput: dict[str, float] = field(default_factory=dict)
    # protocol -> task -> the rank of each scored query's positive (kept in memory, not written out)
    ranks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def headline_protocol(self) -> str | None:
        """The retrieval protocol reports lead with: the authors' (sampled) one when it was run, else the
        full pool; None without embedding tasks."""
        return "sampled" if "sampled" in self.retrieval else next(iter(self.retrieval), None)

    def headline(self) -> dict[str, TaskScore]:
        """Per task the score reports lead with (embedding tasks under `headline_protocol`)."""
        protocol = self.headline_protocol()
        return {**(self.retrieval.get(protocol, {}) if protocol else {}), **self.generative}

    def averages(self) -> dict[str, float]:
        """{"generative": mean headline value over generative tasks, "embedding": ... } (kinds present)."""
        values: dict[str, list[float]] = {}
        for task, score in self.headline().items():
            values.setdefault(get_task(task).kind.value, []).append(score.value)
        return {kind: float(np.mean(v)) for kind, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (answers left out: they are written on their own)."""
        return {"label": self.label, "generative": {t: s.to_dict() for t, s in self.generative.items()},
                "retrieval": {p: {t: s.to_dict() for t, s in group.items()} for p, group in self.retrieval.items()},
                "throughput": self.throughput}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelEvaluation:
        """The evaluation `to_dict` wrote."""
        return cls(data["label"], {t: TaskScore(**s) for t, s in data["generative"].items()},
                   {p: {t: TaskScore(**s) for t, s in group.items()} for p, group in data["retrieval"].items()},
                   throughput=dict(data.get("throughput", {})))


def protocols(options: EvalSection) -> tuple[str, ...]:
    """The retrieval protocols `options` asks for."""
    return PROTOCOLS if options.protocol == "both" else (options.protocol,)


def _retrieval_score(task: str, pool: CandidatePool, output: Output,
                     sampled: tuple[list[list[int]], float] | None, options: EvalSection
                     ) -> tuple[TaskScore, np.ndarray]:
    """One embedding task's score and the ranks it came from: on the full pool (`sampled` None), or
    against the sampled candidates, ranked and scored as `options.scoring` says (the authors' scripts
    have no full-pool protocol)."""
    queries, documents = output.queries[task], output.documents[task][:len(pool.documents)]
    if sampled is None:
        ranks = full_pool_ranks(queries, documents, pool.positives, pool.own)
        return score_retrieval(task, ranks, options.k, protocol=f"full pool ({len(pool.documents)})"), ranks
    candidates, same_share = sampled
    drawn = f"{options.sampled_negatives} negatives, {same_share:.0%} same-category"
    if options.scoring == "authors":
        ranks, skipped, negatives = authors.sampled_ranks(task, queries, documents, candidates)
        name = f"sampled ({drawn})" if negatives == options.sampled_negatives else \
            f"sampled (the first {negatives} of {drawn})"
        return score_retrieval(task, ranks, options.k, protocol=name, scoring="authors", skipped=skipped), ranks
    ranks = sampled_ranks(queries, documents, candidates)
    return score_retrieval(task, ranks, options.k, protocol=f"sampled ({drawn})"), ranks


def evaluate_model(source: ModelSource, data: Mapping[str, list[dict]], options: EvalSection = EvalSection(),
                   scorer: BertScorer | None = None, seed: int = 0, use_gpu: bool = False,
                   catalog: Catalog | None = None) -> ModelEvaluation:
    """Score `source` on `data` ({task: normalized records}, e.g. `load_split`); `scorer` is a
    `BertScorer` for the free-text tasks (None: token F1). The sampled negatives are drawn from `seed`,
    so every model evaluated with the same seed ranks against the same candidates. With the `catalog` of a
    root built from logs (`recfound.eval.catalog.load_catalog`), its embedding tasks are also ranked
    against every item (protocol "catalog")."""
    pools = {t: CandidatePool.of(t, records) for t, records in data.items() if get_task(t).kind is Kind.EMBEDDING}
    # drawn before any inference: a pool too small for the sampled protocol fails now, not after the work
    sampled = {t: pool.sampled_candidates(options.sampled_negatives, seed) for t, pool in pools.items()
               if "sampled" in protocols(options)}
    ranked = [t for t in pools if catalog is not None and t in catalog.targets]
    documents = {t: catalog.documents(list(p.documents)) if t in ranked else list(p.documents)
                 for t, p in pools.items()}
    work = Work(generate={t: list(r) for t, r in data.items() if get_task(t).kind is Kind.GENERATIVE},
                queries={t: list(data[t]) for t in pools}, documents=documents)
    started = time.perf_counter()
    output = _run_sharded(source, work, options, use_gpu)
    evaluation = ModelEvaluation(source.label, answers=output.answers)
    for task, answers in output.answers.items():
        score = score_generative(task, answers, work.generate[task], scorer, options.scoring)
        evaluation.generative[task] = replace(score, cut=output.cut[task])
    queries = sum(len(v) for v in work.queries.values())
    for protocol in protocols(options):
        group, ranked_by = evaluation.retrieval.setdefault(protocol, {}), evaluation.ranks.setdefault(protocol, {})
        for task, pool in pools.items():
            group[task], ranked_by[task] = _retrieval_score(
                task, pool, output, sampled[task] if protocol == "sampled" else None, options)
    for task in ranked:
        evaluation.retrieval.setdefault(CATALOG, {})[task] = catalog.model_score(
            task, output.queries[task], work.documents[task], output.documents[task], options.k)
    evaluation.throughput = {  # per worker: the shards' times add up although they run side by side
        "seconds": time.perf_counter() - started,
        "generated_tokens_per_s_per_worker": output.generated_tokens / max(output.generate_seconds, 1e-9),
        "embedded_texts_per_s_per_worker": (queries + sum(len(v) for v in work.documents.values()))
        / max(output.embed_seconds, 1e-9),
    }
    return evaluation
