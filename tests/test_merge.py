"""Model merge: TIES against peft's merge_utils, the authors' method against a transcription of their script,
worked examples, the adapter files of a run, the CLI."""

from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager

import pytest
import torch
from peft.utils.merge_utils import ties

from recfound.cli import main
from recfound.merge import merge_run, ties_merge
from recfound.run_layout import RunLayout
from recfound.model.state import load_adapter, read_adapter, save_adapter
from recfound.train.manifest import write_manifest
from test_model_tmole import randomise, tiny_adapter

SHAPES = {"matrix": (6, 5), "vector": (7,), "cube": (2, 3, 4), "scalar": ()}
DENSITIES = [0.5, 0.8, 1.0]


def random_states(count: int, dtype=torch.float64, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    states = [{name: torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
               for name, shape in SHAPES.items()} for _ in range(count + 1)]
    return states[0], states[1:]


@contextmanager
def density_one_allowed():
    """peft warns that density 1 prunes nothing (which is what it should do)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The density 1.0 is greater than or equal to 1")
        yield


@pytest.mark.parametrize("density", DENSITIES)
def test_ties_equals_peft(density):
    base, checkpoints = random_states(3)
    merged = ties_merge(base, checkpoints, density)
    for name, origin in base.items():
        taus = [state[name] - origin for state in checkpoints]
        # peft's ties with unit weights is the disjoint mean of the trimmed task vectors
        with density_one_allowed():
            mean = ties(taus, torch.ones(3, dtype=torch.float64), density, majority_sign_method="total")
        assert torch.equal(merged[name], origin + mean), name


def their_magnitude(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """The `magnitude` of the sparsify module their merge script imports (mergekit's, rescaling off), as
    written there: argsort of the float32 magnitudes on CPU, the first k places kept."""
    if density >= 1:
        return tensor
    k = int(density * tensor.numel())
    assert k > 0, "not gonna zero out the whole tensor"
    mask = torch.zeros_like(tensor)
    w = tensor.abs().view(-1)
    if w.device.type == "cpu":
        w = w.float()
    topk = torch.argsort(w, descending=True)[:k]
    mask.view(-1)[topk] = 1
    return tensor * mask


def their_ties(base: dict, models: list[dict], density: float) -> dict:
    """A transcription of the `ties` branch of the authors' merge/merge_moe.py with sparsify_method
    'magnitude' (models_path[0] is `base`, the others `models`), loop for loop."""
    vector_model = {key: torch.zeros_like(tensor) for key, tensor in base.items()}
    final_model = {key: torch.zeros_like(tensor) for key, tensor in base.items()}
    for model in models:
        for key, tensor in model.items():
            vector_model[key] += tensor - base[key]
    sign_mask = {key: torch.sign(tensor) for key, tensor in vector_model.items()}
    count_mask = {key: torch.zeros_like(tensor) for key, tensor in vector_model.items()}
    for model in models:
        for key, tensor in model.items():
            tensor = tensor - base[key]
            mask = torch.sign(tensor) != sign_mask[key]
            count_mask[key] += torch.ones_like(mask).int() - mask.int()
            tensor[mask] = 0
            tensor = their_magnitude(tensor, density)
            final_model[key] += tensor
    return {key: tensor / (count_mask[key] + 1e-9) + base[key] for key, tensor in final_model.items()}


AUTHORS_SHAPES = {"matrix": (6, 5), "vector": (7,), "cube": (2, 3, 4), "wide": (24, 40)}


def authors_states(count: int, seed: int, conflicting: bool):
    """A random base and `count` checkpoints. Normal task vectors, or (`conflicting`) small integers
    -2..2: many equal magnitudes (over 16 entries, where torch's argsort is not stable), many exactly
    cancelling sums (an elected sign of 0), many disagreeing signs."""
    generator = torch.Generator().manual_seed(seed)
    base = {name: torch.randn(shape, generator=generator, dtype=torch.float64)
            for name, shape in AUTHORS_SHAPES.items()}

    def task_vector(shape):
        if conflicting:
            return torch.randint(-2, 3, shape, generator=generator).double()
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    return base, [{name: tensor + task_vector(tensor.shape) for name, tensor in base.items()} for _ in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("density", [0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("conflicting", [False, True])
def test_authors_equals_a_transcription_of_their_merge_script(count, density, conflicting):
    base, checkpoints = authors_states(count, seed=count, conflicting=conflicting)
    expected = their_ties(base, checkpoints, density)
    merged = ties_merge(base, checkpoints, density, method="authors")
    for name, tensor in expected.items():
        assert torch.equal(merged[name], tensor), name


def test_authors_differs_from_ties_where_signs_conflict():
    base, checkpoints = authors_states(3, seed=7, conflicting=True)
    authors, standard = ties_merge(base, checkpoints, 0.5, method="authors"), ties_merge(base, checkpoints, 0.5)
    assert all(not torch.equal(authors[name], standard[name]) for name in base)


def test_authors_in_bfloat16_is_the_float64_merge_rounded():
    base, checkpoints = authors_states(3, seed=3, conflicting=True)
    low_base = {name: tensor.bfloat16() for name, tensor in base.items()}
    low_checkpoints = [{name: tensor.bfloat16() for name, tensor in state.items()} for state in checkpoints]
    merged = ties_merge(low_base, low_checkpoints, 0.8, method="authors")
    wide = their_ties({n: t.double() for n, t in low_base.items()},
                      [{n: t.double() for n, t in state.items()} for state in low_checkpoints], 0.8)
    for name, tensor in wide.items():
        assert merged[name].dtype == torch.bfloat16 and torch.equal(merged[name], tensor.bfloat16()), name


# A worked example: base 1 everywhere, three task vectors, density 0.5 (keep 2 of 4 entries each).
TAUS = [[[3.0, -1.5], [0.5, 2.0]],     # keeps 3 and 2
        [[-1.0, 4.0], [0.5, -2.0]],    # keeps 4 and -2
        [[2.5, -3.0], [-1.0, 0.25]]]   # keeps 2.5 and -3


def worked_example(method: str) -> torch.Tensor:
    base = {"w": torch.ones(2, 2, dtype=torch.float64)}
    checkpoints = [{"w": 1 + torch.tensor(tau, dtype=torch.float64)} for tau in TAUS]
    return ties_merge(base, checkpoints, density=0.5, method=method)["w"]


def test_worked_example_ties():
    # trimmed sums: [3 + 2.5, 4 - 3; 0, 2 - 2] = [5.5, 1; 0, 0] -> signs [+, +; +, +] (a zero sum elects +)
    # agreeing means: [(3 + 2.5) / 2, 4 (-3 disagrees); nothing kept -> 0, 2 (-2 disagrees)]
    assert torch.equal(worked_example("ties"), 1 + torch.tensor([[2.75, 4.0], [0.0, 2.0]], dtype=torch.float64))


def test_worked_example_authors():
    # untrimmed sums: [3 - 1 + 2.5, -1.5 + 4 - 3; 0.5 + 0.5 - 1, 2 - 2 + 0.25] = [4.5, -0.5; 0, 0.25]
    # -> signs [+, -; 0, +]; agreeing counts [2, 2; 0 (nothing has sign 0), 2]
    # disagreeing entries zeroed: [3, -1.5; 0, 2], [0, 0; 0, 0], [2.5, -3; 0, 0.25]
    # each trimmed to its 2 largest: [3, 0; 0, 2], zeros, [2.5, -3; 0, 0] -> sums [5.5, -3; 0, 2]
    # divided by count + 1e-9 (the -1.5 and 0.25 were trimmed away but still count)
    expected = torch.tensor([[5.5, -3.0], [0.0, 2.0]], dtype=torch.float64) / (
        torch.tensor([[2.0, 2.0], [0.0, 2.0]], dtype=torch.float64) + 1e-9)
    assert torch.equal(worked_example("authors"), 1 + expected)
    assert torch.allclose(expected, torch.tensor([[2.75, -1.5], [0.0, 1.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_checkpoint_at_density_one_is_returned_exactly(dtype):
    base, (checkpoint,) = random_states(1, dtype)
    merged = ties_merge(base, [checkpoint], density=1.0)
    for name, tensor in checkpoint.items():
        assert merged[name].dtype == dtype and torch.equal(merged[name], tensor)


def test_bfloat16_in_bfloat16_out_rounded_from_the_float64_merge():
    base, checkpoints = random_states(3, torch.bfloat16)
    merged = ties_merge(base, checkpoints, 0.8)
    wide = ties_merge({n: t.double() for n, t in base.items()},
                      [{n: t.double() for n, t in state.items()} for state in checkpoints], 0.8)
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor, wide[name].to(torch.bfloat16), rtol=0, atol=0)


def test_bad_arguments_are_refused_naming_what():
    base, checkpoints = random_states(2)
    for density in (0.0, 1.5):
        with pytest.raises(ValueError, match=rf"density must be in \(0, 1\], got {density}"):
            ties_merge(base, checkpoints, density)
    with pytest.raises(ValueError, match="at least one checkpoint"):
        ties_merge(base, [])
    wrong = {**checkpoints[1], "matrix": torch.zeros(5, 6, dtype=torch.float64)}
    with pytest.raises(ValueError, match=r"checkpoint 1: tensor 'matrix' has shape \(5, 6\), the base \(6, 5\)"):
        ties_merge(base, [checkpoints[0], wrong])
    with pytest.raises(ValueError, match="checkpoint 0: tensor 'cube' is missing"):
        ties_merge(base, [{n: t for n, t in checkpoints[0].items() if n != "cube"}])
    with pytest.raises(ValueError, match="checkpoint 0: tensor 'extra' is not in the base"):
        ties_merge(base, [{**checkpoints[0], "extra": torch.zeros(1)}])
    with pytest.raises(ValueError, match="unknown merge method 'vote': use 'ties' or 'authors'"):
        ties_merge(base, checkpoints, method="vote")
    # their sparsify asserts that the trim keeps something: the 7 entries of "vector" at density 0.1 keep 0
    with pytest.raises(ValueError, match=r"tensor 'vector' has 7 entries, of which density 0.1 keeps none; .*"
                                         r"raise the density or use the method 'ties'"):
        ties_merge({"vector": base["vector"]}, [{"vector": state["vector"]} for state in checkpoints], 0.1,
                   method="authors")


# Folder names out of step order, and steps whose text order differs from their numeric order.
STEPS = {"checkpoint_c": 50, "checkpoint_a": 100, "checkpoint_d": 200, "checkpoint_b": 1000}


def perturb(adapter, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.trainable_state().values():
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype), alpha=0.1)


@pytest.fixture
def run_dir(tmp_path):
    """A run folder as training writes it: the initial adapter and four checkpoints with progress.json."""
    run = tmp_path / "run"
    _, adapter = tiny_adapter(dtype="float32")
    randomise(adapter)
    save_adapter(adapter, run / "adapter_init.safetensors")
    for seed, (name, step) in enumerate(STEPS.items()):
        perturb(adapter, seed)
        save_adapter(adapter, run / name / "adapter.safetensors")
        (run / name / "progress.json").write_text(json.dumps({"step": step, "loss": 1.0}))
        (run / name / "optimizer.pt").write_bytes(b"ignored")
        write_manifest(run / name, rank=0, world_size=1)
    (run / "notes.txt").write_text("ignored")
    return run


def test_the_checkpoint_finder_orders_by_step(run_dir):
    assert [folder.name for folder in RunLayout(run_dir).checkpoints()] == list(STEPS)


def test_merge_run_writes_the_ties_merge_of_the_last_checkpoints(run_dir):
    out = merge_run(run_dir)
    assert out == str(run_dir / "merged.safetensors") and not list(run_dir.glob(".*tmp"))
    _, init = read_adapter(run_dir / "adapter_init.safetensors")
    last = [read_adapter(run_dir / name / "adapter.safetensors")[1] for name in ("checkpoint_a", "checkpoint_d",
                                                                                  "checkpoint_b")]
    expected = ties_merge(init, last, 0.8)
    _, merged = tiny_adapter(dtype="float32")
    load_adapter(merged, out)
    state = merged.trainable_state()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
    header, _ = read_adapter(out)
    info = header["merge"]
    assert {k: info[k] for k in ("method", "density", "base", "tensors")} == {
        "method": "ties", "density": 0.8, "base": "adapter_init.safetensors", "tensors": len(expected)}
    assert info["sources"] == [{"file": f"{name}/adapter.safetensors", "step": STEPS[name]}
                               for name in ("checkpoint_a", "checkpoint_d", "checkpoint_b")]
    assert 0.5 < info["changed"] <= 1


def test_mismatched_checkpoints_and_broken_runs_are_refused_naming_the_file(run_dir):
    _, other = tiny_adapter((2, 1, 2), dtype="float32")
    save_adapter(other, run_dir / "checkpoint_d" / "adapter.safetensors")
    write_manifest(run_dir / "checkpoint_d", rank=0, world_size=1)  # complete, but of another adapter
    with pytest.raises(ValueError, match=r"checkpoint_d/adapter.safetensors: config differs from the base .*"
                                         r"shared_experts: file 1 vs base 2"):
        merge_run(run_dir)
    _, other_base = tiny_adapter(dtype="float32", seed=1)
    save_adapter(other_base, run_dir / "checkpoint_d" / "adapter.safetensors")
    write_manifest(run_dir / "checkpoint_d", rank=0, world_size=1)
    with pytest.raises(ValueError, match="checkpoint_d/adapter.safetensors: base_fingerprint differs"):
        merge_run(run_dir)
    (run_dir / "checkpoint_a" / "progress.json").write_text('{"epoch": 1}')
    write_manifest(run_dir / "checkpoint_a", rank=0, world_size=1)  # complete, but without a step
    with pytest.raises(ValueError, match=r"checkpoint_a/progress.json: expected an integer 'step', got None"):
        RunLayout(run_dir).checkpoints()
    (run_dir / "checkpoint_e").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint_\\* folders"):
        merge_run(run_dir / "checkpoint_e")
    assert not (run_dir / "merged.safetensors").exists()


def test_incomplete_checkpoints_are_skipped_naming_them(run_dir, capsys):
    """As a full disk or a kill during the copy leaves them: a short adapter, a changed progress.json of
    the same size, a rank's manifest missing, no manifest at all. Merging the run's last 1 uses the
    latest complete checkpoint, and says which ones it skipped and why."""
    import shutil

    adapter = run_dir / "checkpoint_b" / "adapter.safetensors"
    written = adapter.stat().st_size
    with adapter.open("r+b") as handle:
        handle.truncate(written // 2)
    progress = run_dir / "checkpoint_d" / "progress.json"
    progress.write_text(progress.read_text().replace("200", "201"))
    shutil.copytree(run_dir / "checkpoint_c", run_dir / "checkpoint_f")
    manifest = json.loads((run_dir / "checkpoint_f" / "manifest-rank0.json").read_text())
    (run_dir / "checkpoint_f" / "manifest-rank0.json").write_text(json.dumps({**manifest, "world_size": 2}))
    (run_dir / "checkpoint_g").mkdir()
    (run_dir / "checkpoint_g" / "progress.json").write_text('{"step": 5000}')
    assert [folder.name for folder in RunLayout(run_dir).checkpoints()] == ["checkpoint_c", "checkpoint_a"]
    printed = capsys.readouterr().out
    assert f"warning: skipping the incomplete checkpoint {run_dir / 'checkpoint_b'}: adapter.safetensors has " \
           f"{written // 2} bytes, not the {written} written" in printed
    assert "checkpoint_d: progress.json is not the file written (its SHA-256 differs)" in printed
    assert "checkpoint_f: the manifests of rank(s) 1 are missing" in printed
    assert "checkpoint_g: no manifest-rank*.json (the checkpoint was never completed" in printed
    merged = merge_run(run_dir, last=1)
    assert read_adapter(merged)[0]["merge"]["sources"] == [{"file": "checkpoint_a/adapter.safetensors", "step": 100}]


def test_cli_merges_a_run_and_chosen_checkpoints(run_dir, capsys):
    assert main(["merge", str(run_dir), "--last", "2", "--density", "0.5", "--method", "authors"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("merged 2 checkpoint(s) (step 200, step 1000) onto ")
    assert ": TIES as the authors merge, density 0.5;" in lines[0]
    assert "of the entries changed from the base" in lines[0]
    assert lines[1] == f"wrote {run_dir / 'merged.safetensors'}"
    _, init = read_adapter(run_dir / "adapter_init.safetensors")
    chosen = [read_adapter(run_dir / name / "adapter.safetensors")[1] for name in ("checkpoint_d", "checkpoint_b")]
    _, merged = read_adapter(run_dir / "merged.safetensors")
    expected = ties_merge(init, chosen, 0.5, method="authors")
    assert all(torch.equal(merged[name], tensor) for name, tensor in expected.items())

    out = run_dir.parent / "picked.safetensors"
    assert main(["merge", str(run_dir / "checkpoint_c"), str(run_dir / "checkpoint_a" / "adapter.safetensors"),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(step 50, step 100)" in printed
    assert read_adapter(out)[0]["merge"]["base"] == "run/adapter_init.safetensors"
    assert read_adapter(out)[0]["merge"]["method"] == "ties" and ": TIES, density 0.8;" in printed


@pytest.mark.parametrize("args, message", [
    (["{run}", "--density", "1.5"], r"density must be in \(0, 1\], got 1.5"),
    (["{run}/missing"], "missing: no such file or folder"),
    (["{run}", "{run}/checkpoint_a"], "a run folder is merged on its own"),
    (["{run}/checkpoint_a", "--last", "2"], "applies to a run folder only"),
    (["{run}", "--out", "{run}/adapter_init.safetensors"], "would overwrite one of the inputs"),
    (["{run}/adapter_init.safetensors", "{run}/checkpoint_a"], r"not all sit in one run folder .*give the base"),
    (["{run}/checkpoint_a", "{run}/../checkpoint_e"], "checkpoint_e: checkpoint folder without adapter.safetensors"),
    # a run's own files are never an output: a checkpoint's adapter, its config, a text file
    (["{run}", "--last", "1", "--out", "{run}/checkpoint_a/adapter.safetensors"],
     "checkpoint_a/adapter.safetensors: exists and is not a merged adapter .*choose another --out"),
    (["{run}", "--out", "{run}/notes.txt"], "notes.txt: exists and is not a merged adapter"),
    (["{run}", "--out", ""], "--out: an empty path; give a file name"),
    ([""], r"nothing to merge: .*\(an empty path was given\)"),
    (["{run}/checkpoint_c", "{run}/checkpoint_c/", "{run}/checkpoint_c/adapter.safetensors"],
     "checkpoint_c/adapter.safetensors: given twice; each checkpoint is merged once"),
])
def test_cli_errors(run_dir, capsys, args, message):
    (run_dir.parent / "checkpoint_e").mkdir()  # an empty checkpoint folder beside the run
    assert main(["merge", *(arg.format(run=run_dir) for arg in args)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recfound: error: ")
    assert len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not (run_dir / "merged.safetensors").exists()


def test_a_run_in_a_bucket_merges_as_it_does_on_disk_skipping_a_cut_off_upload(run_dir, object_store, capsys):
    """`recfound merge s3://...`: the run folder read from the bucket (its incomplete checkpoint skipped,
    named), the merged file written there, byte for byte the local merge of the same folder."""
    from recfound import storage
    from recfound.cli import main

    (run_dir / "checkpoint_b" / "optimizer.pt").unlink()  # an upload cut off before this file arrived
    bucket_run = f"{object_store}/merge-test/{run_dir.parent.name}/run"
    storage.upload(run_dir, bucket_run)
    assert main(["merge", bucket_run]) == 0
    printed = capsys.readouterr().out
    assert f"warning: skipping the incomplete checkpoint {bucket_run}/checkpoint_b: optimizer.pt (of rank 0) is " \
           "missing" in printed
    assert f"wrote {bucket_run}/merged.safetensors" in printed
    local = merge_run(run_dir)
    assert storage.read_bytes(f"{bucket_run}/merged.safetensors") == (run_dir / "merged.safetensors").read_bytes()
    assert [source["step"] for source in read_adapter(local)[0]["merge"]["sources"]] == [50, 100, 200]
    # A bucket folder named as the output: refused (the object would hide the run's files), the run intact.
    assert main(["merge", bucket_run, "--out", bucket_run]) == 1
    assert capsys.readouterr().err == f"recfound: error: {bucket_run}: is a folder; give the name of a file " \
                                      "(inside it, say)\n"
    assert storage.is_dir(bucket_run) and "merged.safetensors" in storage.list_names(bucket_run)
    storage.delete(bucket_run)


def test_an_earlier_merge_is_replaced_and_fewer_checkpoints_than_asked_are_said(run_dir, capsys):
    assert main(["merge", str(run_dir), "--last", "2"]) == 0
    first = (run_dir / "merged.safetensors").read_bytes()
    assert main(["merge", str(run_dir), "--last", "9"]) == 0  # an earlier merge's output is replaced
    printed = capsys.readouterr().out
    assert f"warning: {run_dir} has {len(STEPS)} complete checkpoint(s), fewer than the last 9 asked for: merging " \
           "those" in printed
    assert (run_dir / "merged.safetensors").read_bytes() != first
    assert [s["step"] for s in read_adapter(run_dir / "merged.safetensors")[0]["merge"]["sources"]] == \
        sorted(STEPS.values())


def test_a_write_that_fails_names_the_output_not_its_hidden_temporary_file(tmp_path, monkeypatch):
    import errno

    import recfound.data.atomic as atomic

    def read_only(source, destination):  # as a read-only file system fails the rename, naming the temporary file
        raise OSError(errno.EROFS, "Read-only file system", str(source), None, str(destination))

    monkeypatch.setattr(atomic.os, "replace", read_only)
    target = tmp_path / "merged.safetensors"
    with pytest.raises(OSError) as caught:
        atomic.atomic_write_bytes(target, b"x")
    assert caught.value.filename == str(target) and caught.value.strerror == "Read-only file system"
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_a_density_too_small_for_some_tensors_says_so_and_leaves_them_at_the_base(run_dir, capsys):
    """At density 0.1 the trim keeps floor(0.1 * numel) entries: none of a tensor of fewer than 10 entries (the
    tiny adapter's router biases and gates); `ties` leaves those at the base, as peft's does, and says so."""
    _, init = read_adapter(run_dir / "adapter_init.safetensors")
    emptied = sorted(name for name, tensor in init.items() if tensor.numel() < 10)
    assert 0 < len(emptied) < len(init)
    assert main(["merge", str(run_dir), "--density", "0.1"]) == 0
    printed = capsys.readouterr().out
    assert f"warning: density 0.1 keeps no entry of {len(emptied)} of the {len(init)} tensors (fewer than " \
           f"1 / density entries, e.g. {next(n for n in init if n in emptied)!r}): they stay the base's; raise the " \
           "density (merge's --density, a run's merge.density) to merge them" in printed
    _, merged = read_adapter(run_dir / "merged.safetensors")
    assert [name for name in init if torch.equal(merged[name], init[name])] == \
        [name for name in init if name in emptied]
    assert main(["merge", str(run_dir)]) == 0 and "keeps no entry" not in capsys.readouterr().out  # 0.8: all keep


def test_a_merge_stopped_by_sigterm_leaves_no_temporary_file(run_dir, capsys, monkeypatch):
    """A real SIGTERM while the merged file is written: status 143, one line, and neither the output nor its
    hidden temporary file in the run folder."""
    import os
    import signal

    from recfound.data import atomic

    fsync = atomic.os.fsync

    def fsync_then_stop(descriptor):
        os.kill(os.getpid(), signal.SIGTERM)
        return fsync(descriptor)

    before = sorted(p.name for p in run_dir.iterdir())
    monkeypatch.setattr(atomic.os, "fsync", fsync_then_stop)
    received = []  # without the command's own handler the signal lands here, not on the test process
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        assert main(["merge", str(run_dir)]) == 143
        assert capsys.readouterr().err == "recfound: stopped by SIGTERM\n"
        assert sorted(p.name for p in run_dir.iterdir()) == before and received == []
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_base_from_another_run_is_refused_by_its_init_fingerprint(tmp_path, capsys):
    """Two runs of the same settings but another seed start from other initial adapters with the same header
    otherwise: a checkpoint of one merged onto the other's init would silently be wrong."""
    _, adapter = tiny_adapter(dtype="float32")
    randomise(adapter)
    adapter.init_id = "a" * 16
    save_adapter(adapter, tmp_path / "init.safetensors")
    perturb(adapter, 7)
    save_adapter(adapter, tmp_path / "checkpoint.safetensors")
    randomise(adapter)
    adapter.init_id = "b" * 16
    save_adapter(adapter, tmp_path / "other_init.safetensors")
    out = tmp_path / "merged.safetensors"
    assert main(["merge", str(tmp_path / "checkpoint.safetensors"), "--base", str(tmp_path / "other_init.safetensors"),
                 "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"recfound: error: {tmp_path / 'checkpoint.safetensors'}: trained from another initial adapter than the base "
        f"{tmp_path / 'other_init.safetensors'} (init_fingerprint {'a' * 16} vs {'b' * 16}): give the "
        "adapter_init.safetensors of the run that wrote it as --base\n")
    assert not out.exists()
    assert main(["merge", str(tmp_path / "checkpoint.safetensors"), "--base", str(tmp_path / "init.safetensors"),
                 "--out", str(out)]) == 0
    assert read_adapter(out, with_tensors=False)[0]["init_fingerprint"] == "a" * 16
