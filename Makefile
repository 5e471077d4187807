# The two set-up commands: `make demo` and `make test`. Everything else is a helper.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TESSERA_HOME ?= $(CURDIR)/.tessera
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
# PREFECT_HOME: `tessera` puts it in $(TESSERA_HOME)/prefect and creates it; tests use a temp dir.

.PHONY: install demo test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -qq -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tessera demo

test: install
	$(BIN)/ruff check flows models data_contracts infra tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q --durations=15

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check flows models data_contracts infra tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/pip install -qq -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(TESSERA_HOME) .pytest_cache
