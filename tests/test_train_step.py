"""The training step's branches against full-batch computations: GradCache (on one rank and across
two gloo ranks) and generative gradient accumulation give the full-batch losses and gradients."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from recfound.data.collate import collate_embedding, collate_generative
from recfound.model.objectives import EmbeddingConfig, embedding_loss, generative_loss
from recfound.train.step import StepOptions, train_step
from test_model_tmole import INFO, randomise, tiny_adapter

# The tiny float64 backbone's per-row gradients differ by up to ~1.5e-5 relative between batch shapes
# (a row alone vs. inside a batch; measured with eager and SDPA attention alike; ~1e-6 before the preset's
# weights were drawn with std 0.1 instead of 0.02): tolerances sit above that and far below what a wrong
# scale, a missed term or a wrong RNG replay would give (errors of order 1).
RTOL, ATOL = 1e-4, 1e-8
CONFIGS = {"defaults": EmbeddingConfig(temperature=0.05),
           "all-options": EmbeddingConfig(temperature=0.05, symmetric=True, pool_instruction=False,
                                          bidirectional=True, share_negatives=False)}


def rows(seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """Random embedding rows (varied lengths, 0-2 given negatives) and generative rows of several tasks."""
    rng = np.random.default_rng(seed)

    def text(low: int, high: int, embed: bool = True) -> list[int]:
        ids = rng.integers(5, INFO.vocab_size, rng.integers(low, high)).tolist()
        return [INFO.embed_id, *ids] if embed else ids

    n = 10
    embedding = pa.table({
        "task": [["U2I", "Q2I", "I2I"][i % 3] for i in range(n)],
        "query_ids": [text(3, 12) for _ in range(n)],
        "query_prefix_len": pa.array(rng.integers(1, 3, n), pa.int32()),
        "positive_ids": [text(2, 9) for _ in range(n)],
        "negative_ids": [[text(2, 9) for _ in range(rng.integers(0, 3))] for _ in range(n)],
    })
    m = 9
    generative = pa.table({
        "task": [["QR", "SR", "SA", "AG"][i % 4] for i in range(m)],
        "prompt_ids": [text(3, 10, embed=False) for _ in range(m)],
        "response_ids": [text(1, 6, embed=False) for _ in range(m)],
    })
    return embedding, generative


def tensors(batch: dict) -> dict:
    return {key: torch.from_numpy(value) for key, value in batch.items()}


def collated(embedding: pa.Table, generative: pa.Table) -> tuple[dict, dict]:
    return tensors(collate_embedding(embedding, INFO.pad_id)), tensors(collate_generative(generative, INFO.pad_id))


def model(dropout: float = 0.0, dtype: str = "float64"):
    from dataclasses import replace

    _, adapter = tiny_adapter(dtype=dtype)
    randomise(adapter)
    for _, _, wrapped in adapter.projections():
        wrapped.dropout = dropout
    adapter.config = replace(adapter.config, dropout=dropout)
    return adapter.train()


def grads(adapter) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in adapter.trainable_state().items()}


def full_batch(adapter, embedding: dict, generative: dict, config: EmbeddingConfig) -> tuple[float, dict]:
    adapter.zero_grad(set_to_none=True)
    loss = (embedding_loss(adapter.model, embedding, config, route=adapter.set_tasks)
            + generative_loss(adapter.model, generative, route=adapter.set_tasks))
    loss.backward()
    return loss.item(), grads(adapter)


def stepped(adapter, embedding: dict, generative: dict, config: EmbeddingConfig, micro: tuple[int, int]):
    """One step with plain autograd; grad_scale 1: the ranks' gradients are summed here, not averaged."""
    adapter.zero_grad(set_to_none=True)
    losses = train_step(adapter, embedding, generative, StepOptions(config, *micro), lambda loss: loss.backward(),
                        grad_scale=1.0)
    return losses, grads(adapter)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("micro", [(3, 2), (1, 4), (4, 1)])
def test_cached_and_accumulated_step_equals_the_full_batch(name, micro):
    config = CONFIGS[name]
    adapter = model()
    embedding, generative = collated(*rows())
    expected_loss, expected = full_batch(adapter, embedding, generative, config)
    losses, got = stepped(adapter, embedding, generative, config, micro)
    assert losses.total == pytest.approx(expected_loss, rel=1e-10)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=RTOL, atol=ATOL, msg=key)
    assert any(g.abs().sum() > 0 for g in got.values())


def test_per_task_train_losses_are_the_task_means():
    adapter = model()
    embedding_rows, generative_rows = rows()
    losses, _ = stepped(adapter, *collated(embedding_rows, generative_rows), CONFIGS["defaults"], (3, 2))
    adapter.eval()
    with torch.no_grad():  # the QR rows alone: their token-mean CE
        qr = generative_rows.filter(pa.compute.equal(generative_rows["task"], "QR"))
        alone = generative_loss(adapter.model, tensors(collate_generative(qr, INFO.pad_id)), route=adapter.set_tasks)
    assert losses.tasks["QR"] == pytest.approx(alone.item(), rel=1e-12)
    assert set(losses.tasks) == set(adapter.tasks.names)
    assert all(np.isfinite(losses.tasks[t]) for t in ("U2I", "Q2I", "I2I", "QR", "SR", "SA", "AG"))
    assert np.isnan(losses.tasks["PM"])  # no PM rows this step


def test_replayed_dropout_matches_the_first_pass():
    """With dropout on, micro-batches as large as the batch reproduce the full batch exactly: the
    no-graph pass and its replay draw the same masks, in the order a full-batch forward draws them."""
    config = CONFIGS["defaults"]
    embedding, generative = collated(*rows())
    adapter = model(dropout=0.3)
    torch.manual_seed(7)
    expected_loss, expected = full_batch(adapter, embedding, generative, config)
    torch.manual_seed(7)
    losses, got = stepped(adapter, embedding, generative, config, (100, 100))
    assert losses.total == pytest.approx(expected_loss, rel=1e-10)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=RTOL, atol=ATOL, msg=key)


# The distributed cases, run by the suite's one pair of spawned gloo ranks (`two_gloo_ranks` in
# conftest.py, which runs test_train_deepspeed's engine steps too: starting the processes costs more
# than the steps).
SPLITS = {"defaults": ("defaults", False), "all-options": ("all-options", False),
          "all-options-lopsided": ("all-options", True)}


def run_split_cases(rank: int, world: int, out: Path) -> None:
    """On each rank of an initialised gloo group: every SPLITS case's step over this rank's rows."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    embedding_rows, generative_rows = rows()
    for case, (name, lopsided) in SPLITS.items():
        if lopsided:  # rank 0 holds one row of each kind: it runs zero-weight padding micro-batches
            mine = lambda table: table.slice(0, 1) if rank == 0 else table.slice(1)
        else:  # the mixer's round-robin deal
            mine = lambda table: table.take(np.arange(rank, table.num_rows, world))
        adapter = model()
        losses, got = stepped(adapter, *collated(mine(embedding_rows), mine(generative_rows)), CONFIGS[name], (2, 2))
        got["loss"] = torch.tensor([losses.total], dtype=torch.float64)
        save_file({k: v.contiguous() for k, v in got.items()}, str(out / f"{case}-rank{rank}.safetensors"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("case", SPLITS)
def test_two_ranks_sum_to_the_full_batch_gradient(two_gloo_ranks, case):
    """Each rank holds part of the rows (half each, or 1 and the rest); with every rank's embeddings
    as negatives the ranks' gradients sum to the single-process full-batch gradient, and every rank
    reports the global loss."""
    from safetensors.torch import load_file

    name, _ = SPLITS[case]
    parts = [load_file(two_gloo_ranks / "splits" / f"{case}-rank{r}.safetensors") for r in range(2)]
    adapter = model()
    expected_loss, expected = full_batch(adapter, *collated(*rows()), CONFIGS[name])
    for part in parts:
        assert part.pop("loss").item() == pytest.approx(expected_loss, rel=1e-10)
    for key in expected:
        torch.testing.assert_close(parts[0][key] + parts[1][key], expected[key], rtol=RTOL, atol=ATOL, msg=key)
