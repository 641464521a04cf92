# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs genir_mech, runs `genir-mech demo` on the embedded checkpoints
#   make test   -> creates .venv, installs genir_mech with test extras, runs the test suite
# torch is installed first, pinned to the CPU build on disk, so nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup bench

$(BIN)/genir-mech: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(BIN)/genir-mech

demo: setup
	$(BIN)/genir-mech demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	PYTHON=$(abspath $(BIN))/python bench/run_all.sh
