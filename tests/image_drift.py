"""Whether the cluster image (Dockerfile) and the laptop's environment (`make venv`) drifted apart: the
same pip installs in the same order with the same pins and flags, on Ray's GPU image of requirements.txt's
Ray pin and the project's Python, tagged with pyproject.toml's version. Plain text parsing of the files:
no Docker daemon, no network. `image_drift` takes the files' texts (tests/test_container_image.py feeds it
the real files and broken variants)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
IMAGE_REPO = "registry.example.com/recfound"  # every deploy file's image: IMAGE_REPO:<pyproject version>
PROJECT = "the project"  # the key of the step that installs the project itself (`.`)
# The Makefile's exports the image bakes in with the same values, and those it must not bake in:
# DS_ACCELERATOR=cpu is the CPU-only setting of laptops and CI.
BAKED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MLFLOW_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")
NOT_BAKED = ("DS_ACCELERATOR",)
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD", re.IGNORECASE)


# --- Parsing ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str
    line: int  # the line the instruction starts on


@dataclass(frozen=True)
class PipStep:
    """One `pip install` command."""
    source: str  # where it is, for messages: "the Dockerfile (line 40)"
    specs: tuple[str, ...]  # requirement specs and local paths as written: "torch==2.13.0", "."
    requirement_files: tuple[str, ...]  # -r FILE
    flags: tuple[str, ...]  # options that change what is installed: "--no-deps", "--index-url=URL"
    editable: bool

    @property
    def key(self) -> str:
        """What the step installs, to line up the two files' steps: its requirements files, the project,
        or its packages' names."""
        if self.requirement_files:
            return " ".join(f"-r {os.path.normpath(name)}" for name in self.requirement_files)
        return " ".join(PROJECT if _is_path(spec) else _name(spec) for spec in self.specs)


_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:::?=|\?=|=)\s*(.*)")
_REFERENCE = re.compile(r"\$\(([^$()]*)\)")  # an innermost $(...)
_SEPARATORS = re.compile(r"&&|\|\||;")  # these files never quote a separator
_NOISE = {"--quiet", "--no-cache-dir", "--disable-pip-version-check"}  # flags that change nothing installed
_TAKES_VALUE = {"-r", "--requirement", "-e", "--editable", "-c", "--constraint", "-i", "--index-url",
                "--extra-index-url", "-f", "--find-links"}


def _is_path(spec: str) -> bool:
    return spec.startswith((".", "/"))


def _name(spec: str) -> str:
    return canonicalize_name(Requirement(spec).name)


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, backslash-continued lines joined; comment and blank lines dropped,
    inside a continuation too (as Docker does)."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").strip())
        if not line.endswith("\\"):
            keyword, _, args = " ".join(parts).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    return instructions


def _key_values(args: str) -> dict[str, str]:
    """ENV's and LABEL's `k=v k2="v 2"` (or the legacy `ENV NAME value`)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.split("=", 1) for token in tokens)


def pip_step(tokens: list[str], source: str) -> PipStep | None:
    """The `pip install` in one shell command's tokens (`pip`, `pip3` or `python -m pip`, after any
    VAR=value prefixes), or None when the command is something else."""
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return None
    program = os.path.basename(tokens[0])
    if re.fullmatch(r"pip3?(\.\d+)?", program):
        rest = tokens[1:]
    elif re.fullmatch(r"python3?(\.\d+)?", program) and tokens[1:3] == ["-m", "pip"]:
        rest = tokens[3:]
    else:
        return None
    if "install" not in rest:
        return None
    args = rest[rest.index("install") + 1:]
    specs: list[str] = []
    files: list[str] = []
    flags: list[str] = []
    editable = False
    while args:
        arg, args = args[0], args[1:]
        if not arg.startswith("-"):
            specs.append(arg)
            continue
        name, _, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _TAKES_VALUE and not value and args:
            value, args = args[0], args[1:]
        if name in ("-r", "--requirement"):
            files.append(value)
        elif name in ("-e", "--editable"):
            editable = True
            specs.append(value)
        elif name not in _NOISE and not re.fullmatch(r"-q+", name):
            flags.append(f"{name}={value}" if value else name)
    return PipStep(source, tuple(specs), tuple(files), tuple(flags), editable)


def _commands(shell: str) -> list[list[str]]:
    return [shlex.split(part) for part in _SEPARATORS.split(shell) if part.strip()]


def _run_pip_steps(instruction: Instruction) -> list[PipStep]:
    if instruction.keyword != "RUN":
        return []
    source = f"the Dockerfile (line {instruction.line})"
    if instruction.args.startswith("["):  # exec form: one command, no shell
        commands = [json.loads(instruction.args)]
    else:
        commands = _commands(instruction.args)
    return [step for tokens in commands if (step := pip_step(tokens, source)) is not None]


def dockerfile_pip_steps(text: str) -> list[PipStep]:
    return [step for instruction in dockerfile_instructions(text) for step in _run_pip_steps(instruction)]


def makefile_variables(text: str) -> dict[str, str]:
    """The Makefile's variables as written (unexpanded): the defaults `make` uses when neither its
    command line nor the environment sets them."""
    variables: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith("\t") and (match := _ASSIGNMENT.fullmatch(line)):
            variables[match.group(1)] = match.group(2).strip()
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    """`text` with make's $(NAME) references replaced by the variables' values (an unknown one empty, as
    in make) and $(if COND,THEN,ELSE) evaluated: what this Makefile's recipes use."""
    for _ in range(100):
        match = _REFERENCE.search(text)
        if match is None:
            return text
        function, _, rest = match.group(1).partition(" ")
        if function == "if":
            condition, then, otherwise = (rest.split(",", 2) + ["", ""])[:3]
            value = then if condition.strip() else otherwise
        else:
            value = variables.get(match.group(1).strip(), "")
        text = text[:match.start()] + value + text[match.end():]
    raise ValueError(f"make references nest too deep: {text}")


def makefile_pip_steps(text: str, target: str = "$(STAMP)") -> list[PipStep]:
    """The pip installs of the recipe of `target` (the rule that builds the virtual environment), with
    the Makefile's variables at their defaults (so no TORCH_INDEX)."""
    variables = makefile_variables(text)
    wanted = expand(target, variables)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("\t") or ":" not in line or _ASSIGNMENT.fullmatch(line):
            continue
        if wanted not in expand(line.split(":", 1)[0], variables).split():
            continue
        steps: list[PipStep] = []
        for number, recipe in enumerate(lines[index + 1:], index + 2):
            if not recipe.startswith("\t"):
                break
            source = f"the Makefile (line {number})"
            for tokens in _commands(expand(recipe.strip().lstrip("@-"), variables)):
                if (step := pip_step(tokens, source)) is not None:
                    steps.append(step)
        return steps
    raise ValueError(f"the Makefile has no rule for {target}")


def requirement_pins(text: str) -> dict[str, str]:
    """requirements.txt's specs by canonical package name."""
    pins: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            pins[_name(line)] = line
    return pins


# --- The checks ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Texts:
    dockerfile: str
    makefile: str
    requirements: str
    pyproject: str


def _step_differences(make: PipStep, image: PipStep) -> list[str]:
    problems: list[str] = []
    make_specs = {PROJECT if _is_path(spec) else _name(spec): spec for spec in make.specs}
    image_specs = {PROJECT if _is_path(spec) else _name(spec): spec for spec in image.specs}
    for name in sorted(make_specs.keys() | image_specs.keys()):
        ours, theirs = make_specs.get(name), image_specs.get(name)
        if ours is None:
            problems.append(f"{make.key}: {image.source} also installs {theirs}, {make.source} does not")
        elif theirs is None:
            problems.append(f"{make.key}: {make.source} also installs {ours}, {image.source} does not")
        elif name != PROJECT and Requirement(ours).specifier != Requirement(theirs).specifier:
            problems.append(f"{make.key}: {make.source} installs {ours}, {image.source} {theirs}")
    for flag in sorted(set(make.flags) - set(image.flags)):
        problems.append(f"{make.key}: {make.source} passes {flag}, {image.source} does not")
    for flag in sorted(set(image.flags) - set(make.flags)):
        problems.append(f"{make.key}: {image.source} passes {flag}, {make.source} does not")
    return problems


def install_drift(texts: Texts) -> list[str]:
    """The Dockerfile's pip installs against the Makefile's $(STAMP) recipe: the same steps in the same
    order, each with the same pins and flags (the project's step is editable only in the Makefile), and
    each explicit pin of a package that requirements.txt pins too the same as there."""
    make_steps = makefile_pip_steps(texts.makefile)
    image_steps = dockerfile_pip_steps(texts.dockerfile)
    make_keys = [step.key for step in make_steps]
    image_keys = [step.key for step in image_steps]
    problems: list[str] = []
    if make_keys != image_keys:
        problems.append("the pip installs differ in order or number: the Makefile's $(STAMP) recipe installs "
                        f"{' | '.join(make_keys)}; the Dockerfile {' | '.join(image_keys)}")
    image_by_key: dict[str, PipStep] = {}
    for step in image_steps:
        image_by_key.setdefault(step.key, step)
    for step in make_steps:
        if step.key in image_by_key:
            problems.extend(_step_differences(step, image_by_key[step.key]))
        else:
            problems.append(f"{step.key}: {step.source} installs it, the Dockerfile does not")
    problems.extend(f"{step.key}: {step.source} installs it, the Makefile does not"
                    for step in image_steps if step.key not in make_keys)
    problems.extend(f"{step.key}: {step.source} installs it editable (-e): the image installs it as a package"
                    for step in image_steps if step.editable)
    pins = requirement_pins(texts.requirements)
    for step in (*make_steps, *image_steps):
        for spec in step.specs:
            if not _is_path(spec) and _name(spec) in pins \
                    and Requirement(spec).specifier != Requirement(pins[_name(spec)]).specifier:
                problems.append(f"{_name(spec)}: {step.source} installs {spec}, requirements.txt pins "
                                f"{pins[_name(spec)]}")
    return problems


def layer_problems(texts: Texts) -> list[str]:
    """The image builds, and rebuilds cheaply: a COPY brings in each file a pip step reads before that
    step, and the whole source comes in only after the dependencies (a source edit then rebuilds the
    project's layer alone)."""
    problems: list[str] = []
    copied: set[str] = set()
    for instruction in dockerfile_instructions(texts.dockerfile):
        if instruction.keyword in ("COPY", "ADD"):
            sources = [token for token in shlex.split(instruction.args) if not token.startswith("--")][:-1]
            copied.update(os.path.normpath(source) for source in sources)
        for step in _run_pip_steps(instruction):
            reads = [*step.requirement_files, *(spec for spec in step.specs if _is_path(spec))]
            problems.extend(f"{step.key}: {step.source} reads {path} before a COPY brings it in"
                            for path in reads if not copied & {".", os.path.normpath(path)})
            if "." in copied and step.key != PROJECT:
                problems.append(f"{step.key}: {step.source} comes after the whole source is copied in: every "
                                "source edit would reinstall it")
    return problems


def base_image_drift(texts: Texts) -> list[str]:
    """The final FROM is Ray's GPU image rayproject/ray:<Ray>-py3XX-cuXXX of requirements.txt's Ray pin and
    of the project's Python: requires-python's floor, the Python the virtual environment and the tests
    run on (the Makefile takes whatever `python3` is; the README asks for 3.11)."""
    froms = [instruction for instruction in dockerfile_instructions(texts.dockerfile)
             if instruction.keyword == "FROM"]
    if not froms:
        return ["the Dockerfile has no FROM"]
    image = next(token for token in shlex.split(froms[-1].args) if not token.startswith("--"))
    match = re.fullmatch(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3(?P<minor>\d+)-(?P<platform>cu\d+|gpu)", image)
    if match is None:
        return [f"base image {image}: not Ray's GPU image rayproject/ray:<Ray version>-py3XX-cuXXX"]
    problems: list[str] = []
    ray_pin = requirement_pins(texts.requirements).get("ray")
    if ray_pin is None or Requirement(ray_pin).specifier != SpecifierSet(f"=={match['ray']}"):
        problems.append(f"base image {image}: Ray {match['ray']}, requirements.txt pins {ray_pin or 'no Ray'}")
    python = f"3.{match['minor']}"
    requires = SpecifierSet(tomllib.loads(texts.pyproject)["project"]["requires-python"])
    floors = [spec.version for spec in requires if spec.operator == ">="]
    if python not in requires or python not in floors:
        problems.append(f"base image {image}: Python {python}, the project's is {' '.join(floors) or '?'} "
                        f"(requires-python {requires})")
    return problems


def environment_drift(texts: Texts) -> list[str]:
    """The image bakes in the Makefile's offline and telemetry settings with the same values, and neither
    the CPU-only DS_ACCELERATOR nor anything named like a secret."""
    variables = makefile_variables(texts.makefile)
    image_env: dict[str, str] = {}
    build_args: list[str] = []
    for instruction in dockerfile_instructions(texts.dockerfile):
        if instruction.keyword == "ENV":
            image_env.update(_key_values(instruction.args))
        elif instruction.keyword == "ARG":
            build_args.append(instruction.args.split("=", 1)[0].strip())
    problems: list[str] = []
    for name in BAKED:
        wanted = expand(variables.get(name, ""), variables)
        if image_env.get(name) != wanted:
            baked = repr(image_env[name]) if name in image_env else "does not set it"
            problems.append(f"{name}: the Makefile sets {wanted!r}, the Dockerfile {baked}")
    problems.extend(f"{name}: the Dockerfile sets it; it belongs to CPU-only machines, not the GPU image"
                    for name in NOT_BAKED if name in image_env)
    problems.extend(f"{name}: the Dockerfile names a secret; pass secrets at run time, never in the image"
                    for name in [*image_env, *build_args] if SECRET_NAME.search(name))
    return problems


def version_drift(texts: Texts) -> list[str]:
    """The image's version label and every IMAGE_REPO:<tag> the Dockerfile names (its build and push
    commands) are pyproject.toml's version."""
    version = tomllib.loads(texts.pyproject)["project"]["version"]
    labels: dict[str, str] = {}
    for instruction in dockerfile_instructions(texts.dockerfile):
        if instruction.keyword == "LABEL":
            labels.update(_key_values(instruction.args))
    problems: list[str] = []
    label = labels.get("org.opencontainers.image.version")
    if label != version:
        problems.append(f"LABEL org.opencontainers.image.version: {label}, pyproject.toml's version {version}")
    tags = image_tags(texts.dockerfile)
    if not tags:
        problems.append(f"the Dockerfile's build commands do not name {IMAGE_REPO}:{version}")
    problems.extend(f"{IMAGE_REPO}:{tag}: the Dockerfile names this image, pyproject.toml's version is {version}"
                    for tag in tags if tag != version)
    return problems


def image_tags(text: str) -> list[str]:
    return [tag.rstrip(".") for tag in re.findall(rf"{re.escape(IMAGE_REPO)}:(\w[\w.+-]*)", text)]


def image_drift(texts: Texts) -> list[str]:
    """Every way the image differs from what `make venv` builds, each a line naming the step, variable or
    tag and both values; [] when none."""
    return [*install_drift(texts), *layer_problems(texts), *base_image_drift(texts),
            *environment_drift(texts), *version_drift(texts)]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context: the last pattern
    that matches it or a folder above it decides, '!' re-including. fnmatch approximates Docker's
    matching (its '*' also crosses '/'), close enough for these patterns."""
    parts = path.split("/")
    candidates = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}  # '**/' matches no folder at all too
        if any(fnmatch.fnmatchcase(candidate, variant) for candidate in candidates for variant in variants):
            ignored = not negated
    return ignored


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
