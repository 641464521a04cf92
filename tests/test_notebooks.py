"""Every notebook runs top to bottom under a Jupyter kernel (nbclient), as in JupyterLab, so walkthroughs cannot rot.

The committed notebooks carry their outputs (`make notebooks` regenerates them); here they run
in a fresh kernel without being rewritten. Importing genir_mech leaves the matplotlib backend alone,
and plotting functions return Figures that a notebook shows inline.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_quickstart", "02_stages", "03_patching", "04_encoder_swap", "05_heads_compare"]


def _executor():
    spec = importlib.util.spec_from_file_location("notebook_executor", ROOT / "notebooks" / "execute.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_five_notebooks_are_there_with_prose_and_figures():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        prose = [c for c in cells if c["cell_type"] == "markdown"]
        assert len(prose) >= 3, f"{path.name}: too little explanation"
        # committed with outputs (`make notebooks`) so that GitHub shows them
        outputs = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outputs and not any(o.get("output_type") == "error" for o in outputs), f"{path.name}: not committed with clean outputs"
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name}: no inline figure"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_under_a_kernel(notebook):
    pytest.importorskip("nbclient", reason="the notebooks extra (nbclient, ipykernel) is not installed")
    pytest.importorskip("ipykernel", reason="the notebooks extra (nbclient, ipykernel) is not installed")
    nb = _executor().execute(notebook, save=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_importing_genir_mech_leaves_the_matplotlib_backend_alone():
    code = ("import matplotlib; before = matplotlib.rcParams._get_backend_or_none(); "
            "import genir_mech.pipelines.rendering, genir_mech.figures.decoder, genir_mech.figures.patching, genir_mech.figures.stages; "
            "after = matplotlib.rcParams._get_backend_or_none(); assert before == after, (before, after); print(after)")
    env_backend = "module://matplotlib_inline.backend_inline"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**_env(), "MPLBACKEND": env_backend})
    assert proc.returncode == 0, proc.stderr[-2000:]


def _env() -> dict:
    import os
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_plotting_functions_return_the_figure_and_save_png_and_pdf_when_asked(tmp_path):
    import pandas as pd
    from matplotlib.figure import Figure

    from genir_mech.figures.retrieval import plot_rank_cdf
    per_query = pd.DataFrame({"rank": [1, 1, 2, 5, 40]})
    fig = plot_rank_cdf(per_query)
    assert isinstance(fig, Figure) and not list(tmp_path.iterdir())
    assert isinstance(plot_rank_cdf(per_query, tmp_path / "ranks.png"), Figure)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks.pdf", "ranks.png"]
