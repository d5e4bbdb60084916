#!/usr/bin/env bash
# The GPU suite on a device machine that holds torch, transformers and peft but not the SmolLM2 wheel
# nor the gguf package (docs/benchmarks.md, "GPU suite"). The GGUF (94 MiB) is more than one call
# carries (64 MiB), so it travels in two parts, in two calls made one right after the other:
#   here, once:                                         bench/gpu_suite.sh prepare   (fills .gpu/, git-ignored)
#   device call 1, carrying the first part:             bench/gpu_suite.sh stash
#   device call 2, carrying the second part and wheel:  bench/gpu_suite.sh run OUT
#   a rerun on the same machine, carrying nothing:      bench/gpu_suite.sh run OUT --only mistral7b_training
set -euo pipefail
cd "$(dirname "$0")/.."
kit=.gpu
name=SmolLM2-135M-Instruct.Q4_1.gguf
stash="${RECFOUND_CACHE:-$HOME/.cache/recfound}/gpu-suite"

case "${1:-}" in
  prepare)
    source=$(PYTHONPATH=platform .venv/bin/python -c \
      'from recfound.data.tokenizer import smollm2_gguf; print(smollm2_gguf())')
    mkdir -p "$kit"
    grep -qx "/$kit/" .git/info/exclude || echo "/$kit/" >> .git/info/exclude
    split -b 48M "$source" "$kit/$name.part-"
    (cd "$(dirname "$source")" && sha256sum "$name") > "$kit/$name.sha256"
    .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$kit" gguf==0.19.0
    ls -l "$kit" ;;
  stash)
    mkdir -p "$stash" && cp "$kit/$name.part-aa" "$stash/" && echo "stashed the first part in $stash" ;;
  run)
    out=${2:?usage: bench/gpu_suite.sh run OUT [gpu_suite.py options]}
    if [ ! -f "$stash/$name" ] && [ -f "$stash/$name.part-aa" ]; then
      cat "$stash/$name.part-aa" "$kit/$name.part-ab" > "$stash/$name.joined"
      [ "$(sha256sum < "$stash/$name.joined" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$kit/$name.sha256")" ] ||
        { echo "gpu_suite.sh: the joined GGUF's SHA-256 differs from $kit/$name.sha256" >&2; exit 1; }
      mv "$stash/$name.joined" "$stash/$name"
    fi
    [ -f "$stash/$name" ] ||
      echo "gpu_suite.sh: no SmolLM2 GGUF in $stash (a fresh machine?): parts (b) and (d) will fail" >&2
    [ -d "$stash/site/gguf" ] ||
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$stash/site" "$kit"/gguf-*.whl
    PYTHONPATH="$stash/site:platform" PYTHONUNBUFFERED=1 \
      python3 bench/gpu_suite.py --out "$out" --smollm2 "$stash/$name" "${@:3}" ;;
  *)
    echo "usage: bench/gpu_suite.sh prepare | stash | run OUT [gpu_suite.py options]" >&2
    exit 2 ;;
esac
