# Two commands do all the set-up (see README): `make demo` runs the main job on the embedded
# default, `make test` runs the tests. Both create or reuse .venv and install what they need,
# torch first as torch==2.13.0 (the CPU build; a looser pin would download a multi-GB CUDA build).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup demo test federate flwr-run sweep bench

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
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

federate: setup
	$(BIN)/radfl federate --out runs/federated

# `flwr run .` on Flower's local simulation with 3 sites (RUN_CONFIG="key=value ..." overrides
# pyproject's [tool.flwr.app.config]). `radfl submit` checks the run's final status (flwr run exits 0
# even when the ServerApp fails); the detached local SuperLink that flwr starts is stopped afterwards.
FLWR_LOCAL_HOME := $(CURDIR)/runs/flwr-home
SITES ?= 3
flwr-run: setup
	@export FLWR_HOME=$(FLWR_LOCAL_HOME) FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1 PATH=$(CURDIR)/$(BIN):$$PATH; \
	$(BIN)/radfl submit . local --federation-config "num-supernodes=$(SITES)" \
	  --run-config "fl.sites=$(SITES) $(RUN_CONFIG)"; rc=$$?; \
	pkill -TERM -f "[f]lower-superlink .*$(FLWR_LOCAL_HOME)" || true; exit $$rc

sweep: setup
	$(BIN)/radfl sweep --preset quick --out runs/sweep-quick

bench: setup
	$(BIN)/radfl bench --out runs/bench.json
