# Newcomer entry points: `make demo` (set up + run the matcher node on a built-in example) and
# `make test` (set up + run the test suite). Both work on a fresh machine with only Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
# CPU build on machines that carry it locally; set TORCH='torch' (or a CUDA index) elsewhere.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test setup setup-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

setup: $(BIN)/python
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[ros,extractors,pose]'

setup-test: $(BIN)/python
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[ros,extractors,pose,test]'

demo: setup
	$(BIN)/lightglue-ros demo

test: setup-test
	$(BIN)/python -m pytest -q -rs $(PYTEST_ARGS)

bench: setup-test
	$(BIN)/python benchmarks/bench_matcher.py
	$(BIN)/python benchmarks/bench_tracker.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
