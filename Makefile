# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs genir_mech, runs `genir-mech demo` on the embedded checkpoints
#   make test   -> creates .venv, installs genir_mech with test extras, runs the test suite
# torch is installed first, pinned to the CPU build on disk, so nothing pulls a CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup bench notebooks paper tex

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

# Executes notebooks/NN_*.ipynb under a Jupyter kernel and saves them with their outputs (what GitHub shows).
notebooks: setup
	$(BIN)/pip install -q -e '.[notebooks]'
	$(BIN)/python notebooks/execute.py

# A LaTeX engine from Debian packages (texlive-latex-base + texlive-latex-recommended), unless pdflatex is there.
tex:
	bash paper/install_tex.sh

# Regenerates paper/results/ (demo + benchmark tables) and builds paper/main.pdf.
paper: setup tex
	BIN=$(BIN) bash paper/build.sh
