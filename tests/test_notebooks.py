"""Every notebook's code cells run, in order, from the notebooks/ folder (so walkthroughs cannot rot)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(notebook, tmp_path):
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # nnsight recompiles trace blocks from source, so the cells run as a file, not via exec()
    script = tmp_path / f"{notebook.stem}.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=notebook.parent, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
