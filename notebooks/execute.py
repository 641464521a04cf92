"""Execute the notebooks with a Jupyter kernel, top to bottom, and save them with their outputs (`make notebooks`).

    python notebooks/execute.py                     # every notebooks/NN_*.ipynb, in place
    python notebooks/execute.py 02_stages.ipynb     # one of them
    execute(path, save=False)                       # tests/test_notebooks.py: run under a kernel, keep the file as it is

Cells run in the kernel from the notebooks/ folder (the notebooks load
`../checkpoints/...`), exactly as in JupyterLab; a failing cell raises with
its traceback. Needs the `notebooks` extra (nbclient, ipykernel).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(path: str | Path, save: bool = True, timeout: int = 900) -> nbformat.NotebookNode:
    """Run every cell of the notebook at `path` in a fresh python3 kernel; write the outputs back when `save`."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    if save:
        for cell in nb.cells:  # the kernel's run-time metadata would make every regeneration a diff
            cell.metadata.pop("execution", None)
        nbformat.write(nb, path)
    return nb


def main(names: list[str]) -> None:
    for path in [HERE / n for n in names] or NOTEBOOKS:
        started = time.time()
        execute(path)
        print(f"{path.name}: executed in {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
