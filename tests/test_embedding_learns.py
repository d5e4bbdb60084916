"""The embedding branch learns on the synthetic corpus: the tiny preset pre-trained briefly on the corpus's
texts (recfound.model.pretrain), then a short single-process run of the training job's own step (GradCache
InfoNCE + response cross-entropy, `train_step`) with the job's learning-rate schedule and clipping, ends
with a validation InfoNCE (`ValidationSet`, as the S2Sched actor reads it) well below ln(candidates): the
loss of a collapsed model that embeds every text alike, where the demo's embedding tasks used to stay
(docs/training.md, "Why the embedding branch collapsed"). Also: the pre-training cache, and a run's own
copy of the pre-trained preset (`backbone/`)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recfound.config import RunConfig
from recfound.data.blocks import records_table
from recfound.data.collate import collate_embedding, collate_generative
from recfound.data.corpus_text import corpus_texts
from recfound.data.mixer import TaskMixer
from recfound.data.pipeline import equal_counts
from recfound.data.prepare import prepare_backbone
from recfound.data.streams import TokenPool
from recfound.data.synth import synthesize
from recfound.data.tokenize import tokenize_batch
from recfound.data.tokenizer import build_corpus_tokenizer, load_tokenizer
from recfound.eval.data import load_split
from recfound.eval.source import run_serving
from recfound.model.attach import attach_adapter
from recfound.model.backbone import load_backbone
from recfound.model.objectives import embed_batch
from recfound.model.pretrain import MARKER, PretrainOptions, one_thread, pretrained_preset
from recfound.run_layout import RunLayout
from recfound.tasks import get_task
from recfound.train.engine import set_learning_rate
from recfound.train.step import StepOptions, train_step
from recfound.train.validation import ValidationSet

EMBEDDING, GENERATIVE = "I2I", "SR"
STEPS = 20
BATCH = 8  # I2I records per step (each brings its positive and 3 hard negatives)
PRETRAIN = PretrainOptions(steps=RunConfig().model.pretrain_steps)  # what a run of the tiny preset uses


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synthesize(root / "data", seed=0, scale="tiny")
    tokenizer = build_corpus_tokenizer(corpus_texts(root / "data"), root / "tokenizer", vocab_size=2048)
    return root, str(tokenizer)


def pools(root, split: str, tokenizer: str, config: RunConfig) -> dict[str, TokenPool]:
    records = load_split(root / "data", split, [EMBEDDING, GENERATIVE])
    return {task: TokenPool(task, tokenize_batch(records_table(rows, get_task(task)), tokenizer,
                                                 get_task(task).kind.value, config.token_limits()))
            for task, rows in records.items()}


def tensors(arrays) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in arrays.items()}


def plain_info_nce(queries: torch.Tensor, documents: torch.Tensor, temperature: float) -> float:
    """Mean over queries of -log softmax(cos / T) at the query's own document (row i), in float64."""
    q = queries.double() / queries.double().norm(dim=1, keepdim=True)
    d = documents.double() / documents.double().norm(dim=1, keepdim=True)
    logits = q @ d.T / temperature
    return float((torch.logsumexp(logits, dim=1) - logits.diagonal()).mean())


def test_pretrained_preset_is_cached_and_learned_the_corpus(corpus, tmp_path):
    root, tokenizer = corpus
    texts = list(corpus_texts(root / "data"))[:400]
    options = PretrainOptions(steps=20, batch=8, window=32)
    folder, built = pretrained_preset("tiny", tokenizer, texts, options, cache_dir=tmp_path)
    assert built and (folder / "model.safetensors").is_file() and (folder / MARKER).is_file()
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert pretrained_preset("tiny", tokenizer, texts, options, cache_dir=tmp_path) == (folder, False)
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # read, not written again
    assert pretrained_preset("tiny", tokenizer, texts[:-1], options, cache_dir=tmp_path)[0] != folder  # other texts
    # Next-token loss on the texts, computed plainly: the pre-trained weights predict them better than the
    # preset's random ones (its first step's loss is about ln(vocabulary)).
    _, info = load_tokenizer(tokenizer)
    ids = [e.ids for e in load_tokenizer(tokenizer)[0].encode_batch(texts[:32], add_special_tokens=False)]
    width = min(32, min(len(row) for row in ids))
    batch = torch.tensor([row[:width] for row in ids])

    def loss(spec) -> float:
        logits = load_backbone(spec, info).model(input_ids=batch).logits.double()
        return float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                       batch[:, 1:].reshape(-1)))
    assert loss(folder) < loss("tiny") - 1.0


def test_two_callers_asking_for_the_same_preset_build_it_once(corpus, tmp_path):
    """Sweep trials or runs side by side: the second waits for the first's build, then reads the cache (a
    folder replaced under a reader would leave a run without weights). Two threads, each with its own open
    lock file, contend as two processes do (flock locks belong to the open file)."""
    from concurrent.futures import ThreadPoolExecutor

    root, tokenizer = corpus
    texts = list(corpus_texts(root / "data"))[:300]

    def build(_) -> tuple:
        folder, built = pretrained_preset("tiny", tokenizer, texts, PretrainOptions(steps=30, batch=8, window=32),
                                          cache_dir=tmp_path / "cache")
        return folder, built, sorted(p.name for p in folder.iterdir())

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(build, range(2)))
    assert sorted(built for _, built, _ in results) == [False, True]
    assert results[0][0] == results[1][0] and results[0][2] == results[1][2] == \
        ["config.json", "generation_config.json", "model.safetensors", MARKER]


def test_a_run_trains_on_its_own_copy_of_the_pretrained_preset(corpus, tmp_path, monkeypatch):
    """prepare_backbone puts the cached pre-trained preset into the run folder as backbone/ and the run
    uses that folder; a resumed run keeps it; no pre-training, or a backbone that is no preset, changes
    nothing; a run folder's model is rebuilt on it (run_serving)."""
    root, tokenizer = corpus
    monkeypatch.setenv("RECFOUND_CACHE", str(tmp_path / "cache"))
    layout = RunLayout(str(tmp_path / "run"))
    config = RunConfig().with_overrides({"model.pretrain_steps": 3, "data.root": str(root / "data")})
    spec = prepare_backbone(config, str(root / "data"), tokenizer, layout, tmp_path / "run")
    assert spec == str((tmp_path / "run" / "backbone").resolve())
    cached = next((tmp_path / "cache" / "backbones").iterdir())
    assert sorted(p.name for p in (tmp_path / "run" / "backbone").iterdir()) == sorted(p.name for p in cached.iterdir())
    assert run_serving(layout, config).backbone == spec
    written = (tmp_path / "run" / "backbone" / "model.safetensors").stat().st_mtime_ns
    assert prepare_backbone(config, str(root / "data"), tokenizer, layout, tmp_path / "run", resuming=True) == spec
    assert (tmp_path / "run" / "backbone" / "model.safetensors").stat().st_mtime_ns == written
    for other in ({"model.pretrain_steps": 0}, {"model.backbone": str(cached)}):
        changed = config.with_overrides(other)
        assert prepare_backbone(changed, str(root / "data"), tokenizer, layout, tmp_path / "run") == \
            changed.model.backbone
    assert run_serving(RunLayout(str(tmp_path / "elsewhere")), config).backbone == "tiny"


@pytest.mark.timeout(300)
def test_embedding_validation_loss_ends_well_below_the_collapsed_value(corpus, tmp_path):
    root, tokenizer = corpus
    config = RunConfig().with_overrides({"train.steps": STEPS, "tmole.dropout": 0.0})
    _, info = load_tokenizer(tokenizer)
    # The machine's cache, as the training jobs of this suite use it (the same corpus and tokenizer: one build).
    backbone, _ = pretrained_preset("tiny", tokenizer, corpus_texts(root / "data"), PRETRAIN)
    torch.manual_seed(0)
    adapter = attach_adapter(load_backbone(backbone, info), config.adapter_config(), [info.embed_id]).train()
    train, val = pools(root, "train", tokenizer, config), pools(root, "val", tokenizer, config)
    validation = ValidationSet({EMBEDDING: val[EMBEDDING]}, 16, 0, 0, 1, info.pad_id, tensors)
    embedding, generative = (TaskMixer({task: train[task]}, seed=0) for task in (EMBEDDING, GENERATIVE))
    options = StepOptions(config.embedding_config(), config.train.embedding_micro_batch,
                          config.train.generative_micro_batch)
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.train.lr, weight_decay=config.train.weight_decay)

    def val_loss() -> float:
        sums, counts = validation.losses(adapter, options.embedding, 8, 8)
        return sums[EMBEDDING] / counts[EMBEDDING]

    first_after_warmup = math.ceil(config.sched.warmup_ratio * STEPS / 4) * 4  # the S2Sched points are every 4 steps
    losses = {}
    with one_thread():  # as a 1-CPU training worker runs: two threads beside busy processes wait on each other
        for step in range(1, STEPS + 1):
            e = collate_embedding(embedding.next_step(equal_counts(BATCH, [EMBEDDING])).rows, info.pad_id)
            g = collate_generative(generative.next_step(equal_counts(4, [GENERATIVE])).rows, info.pad_id)
            train_step(adapter, tensors(e), tensors(g), options, torch.Tensor.backward, grad_scale=1.0)
            torch.nn.utils.clip_grad_norm_(params, config.train.max_grad_norm)
            set_learning_rate(SimpleNamespace(optimizer=optimizer), config.train, step)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step in (first_after_warmup, STEPS):
                losses[step] = val_loss()
    batch = validation.batches[EMBEDDING]
    candidates = batch["doc_ids"].shape[0]  # every document of the sample: 16 positives + 3 negatives each
    assert candidates == 64
    collapsed = math.log(candidates)  # every similarity equal
    # The last point recomputed plainly from the adapter's embeddings of the sample.
    adapter.eval()
    with torch.no_grad():
        queries, documents = embed_batch(adapter.model, batch, options.embedding, adapter.set_tasks)
    assert plain_info_nce(queries, documents, options.embedding.temperature) == pytest.approx(losses[STEPS], rel=1e-5)
    assert losses[STEPS] < collapsed - 1.0, losses
    assert losses[STEPS] < 0.75 * losses[first_after_warmup], losses
    assert np.isfinite(list(losses.values())).all()
