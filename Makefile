# Two commands for a fresh machine: `make demo` and `make test`. Both build .venv when needed.
# `make demo` installs Keyshift alone (what the demo runs); `make test` adds the test, bench and
# optional-feature extras. Each install has its own stamp, redone when pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed
# Tools the tests run with their own pins (the OpenAPI client generator), apart from Keyshift's venv.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
EXTRAS := hsm,kmip,lake,dev,bench
PYTEST_ARGS ?= -n 2 --durations=15
# `make soak`: trials start for SOAK_SECONDS; about 5 minutes in all (bench/soak.py)
SOAK_SECONDS ?= 240

.PHONY: demo test lint typecheck bench soak clean venv

venv: $(STAMP)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(BASE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(BASE_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP) $(BASE_STAMP)

$(TOOLS_STAMP):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet openapi-python-client
	touch $(TOOLS_STAMP)

demo: $(BASE_STAMP)
	$(BIN)/keyshift demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite runs after lint (ruff) and the type check (mypy): `make test` fails on either.
test: $(STAMP) $(TOOLS_STAMP) lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache .mypy_cache build dist *.egg-info src/*.egg-info
