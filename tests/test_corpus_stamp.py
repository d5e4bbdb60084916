"""A generated synthetic corpus carries `synth.json` (scale, seed, generator version): a run reuses it while it
is the corpus the config asks for, and generates it again when the scale or the generator differs, so that a
changed generator (e.g. the Q2I cards' product type) reaches a folder generated before. A folder without the
stamp is the user's own data and is never touched, except the demo's default folder."""

from __future__ import annotations

import json
from pathlib import Path

from recfound.config import RunConfig
from recfound.data.prepare import CORPUS_STAMP, prepare_corpus
from recfound.data.synth import synthesize


def config(root: Path, **overrides) -> RunConfig:
    return RunConfig().with_overrides({"data.root": str(root), **overrides})


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jsonl"))}


def test_a_generated_corpus_is_stamped_and_reused_whatever_the_seed(tmp_path, capsys):
    root = tmp_path / "data"
    assert prepare_corpus(config(root, **{"run.seed": 3})) == str(root)
    synthesize(tmp_path / "reference", 3, "tiny")
    assert files(root) == files(tmp_path / "reference")
    stamp = json.loads((root / CORPUS_STAMP).read_text())
    assert stamp["scale"] == "tiny" and stamp["seed"] == 3 and len(stamp["generator"]) == 16
    capsys.readouterr()
    prepare_corpus(config(root, **{"run.seed": 5}))  # a sweep's trials of other seeds share the corpus
    assert files(root) == files(tmp_path / "reference") and capsys.readouterr().out == ""


def test_another_generator_or_scale_generates_it_again(tmp_path, capsys):
    root = tmp_path / "data"
    prepare_corpus(config(root))
    generated = files(root)
    for written, said in (({"generator": "0" * 16}, "a corpus of another version of the generator"),
                          ({"scale": "small"}, "the small corpus, not the tiny one"),
                          (None, "an unreadable synth.json")):
        stamp = json.loads((root / CORPUS_STAMP).read_text())
        (root / CORPUS_STAMP).write_text(json.dumps({**stamp, **written}) if written else "not json {")
        (root / "train" / "LEFTOVER.jsonl").write_text("{}\n")
        capsys.readouterr()
        prepare_corpus(config(root))
        assert f"== {root} holds {said}: generating it again" in capsys.readouterr().out
        assert files(root) == generated and json.loads((root / CORPUS_STAMP).read_text()) == stamp


def test_a_folder_without_the_stamp_is_kept_unless_it_is_the_demo_default(tmp_path, monkeypatch, capsys):
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "U2I.jsonl").write_text("my own records\n")
    assert prepare_corpus(config(mine)) == str(mine)
    assert sorted(p.name for p in mine.rglob("*")) == ["U2I.jsonl", "train"]
    # Data given without asking for a synthetic corpus is used as it is, whatever its stamp says.
    (mine / CORPUS_STAMP).write_text(json.dumps({"scale": "small", "generator": "old"}))
    prepare_corpus(config(mine, **{"data.synth_scale": None}))
    assert (mine / "train" / "U2I.jsonl").read_text() == "my own records\n"

    monkeypatch.chdir(tmp_path)  # the default data.root is relative: .cache/demo/data
    demo = tmp_path / RunConfig().data.root
    (demo / "train").mkdir(parents=True)
    (demo / "train" / "Q2I.jsonl").write_text("{}\n")  # a corpus of a recfound without stamps
    capsys.readouterr()
    prepare_corpus(RunConfig())
    assert "holds a corpus of an older recfound (no synth.json): generating it again" in capsys.readouterr().out
    assert (demo / CORPUS_STAMP).is_file() and (demo / "train" / "Q2I.jsonl").read_text() != "{}\n"
