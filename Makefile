# Entry points: `make run` (the default sweep into runs/default/), `make test`, and `make reports`
# (regenerates the committed gallery under reports/ from a clean tree). Each creates .venv as needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make reports SWEEPS="smoke default"` regenerates only these built-in sweeps (default: all).
SWEEPS ?=

.PHONY: run reports test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gradbench run default --out runs/default

reports: $(STAMP)
	$(BIN)/python tools/regenerate_gallery.py $(SWEEPS)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gradbench tests benchmarks tools
	$(BIN)/ruff format --check gradbench tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
