# One command sets everything up and runs: `make demo` (the main job) and `make test` (lint, layering, test suite).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.evoprune-installed

.PHONY: demo test test-all lint install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,ray,onnx]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/evoprune demo

# Lint first (seconds): pyflakes/bugbear/isort rules, unreachable code, and the import layers of docs/architecture.md.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/vulture src tests benchmarks --min-confidence 100 --ignore-names 'require_*,local_ray'
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
