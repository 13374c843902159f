# Two commands do all the set-up (see README): `make demo` runs the main job on the embedded
# default, `make test` runs the tests. Both create or reuse .venv and install what they need,
# torch first as torch==2.13.0 (the CPU build; a looser pin would download a multi-GB CUDA build).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test federate sweep bench

setup: $(VENV)/.radfl-installed

$(VENV)/.radfl-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/radfl train --out runs/demo

test: setup
	$(BIN)/python -m pytest

federate: setup
	$(BIN)/radfl federate --out runs/federated

sweep: setup
	$(BIN)/radfl sweep --preset quick --out runs/sweep-quick

bench: setup
	$(BIN)/radfl bench --out runs/bench.json
