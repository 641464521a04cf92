"""The curated top-level API: every advertised name resolves, loads lazily, and the core types teach by example."""
from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import genir_mech

CORE = ["load_genir", "GenIRModel", "Site", "run", "QueryBatch", "RunResult", "InterventionSpec", "Intervention",
        "InterventionExecutor", "evaluate", "run_ablate", "run_patch", "run_sweep"]


@pytest.mark.parametrize("name", genir_mech.__all__)
def test_every_public_name_resolves_and_has_a_docstring(name):
    obj = getattr(genir_mech, name)
    assert inspect.getdoc(obj), f"genir_mech.{name} has no docstring"


@pytest.mark.parametrize("name", CORE)
def test_core_docstrings_start_with_an_example(name):
    doc = inspect.getdoc(getattr(genir_mech, name))
    # a usage line: a call, not prose (prose lines end with a full stop)
    code_lines = [line for line in doc.splitlines()[1:] if "(" in line and ")" in line and not line.rstrip().endswith(".")]
    assert code_lines, f"help(genir_mech.{name}) shows no usage example"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'load_model'"):
        genir_mech.load_model  # noqa: B018


def test_importing_the_package_loads_nothing_heavy():
    # The API resolves on first use, so `import genir_mech` (and the error types) stay cheap.
    code = "import sys, genir_mech, genir_mech.errors; print(sorted(m for m in ('torch', 'nnsight', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
