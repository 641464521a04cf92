"""The package's layers: no import cycles, and no module imports from a layer above its own.

Layers, bottom up (a module may import its own layer and the ones below):
errors, version, vocabulary, embedded, progress, provenance, results_directory, docids, stage_definition, data (0) < models (1) < training, retrieval (2)
< interventions (3) < analyses, patching, heads (4) < figures (5) < pipelines (6) < reporting, sweep, verbs, cli (7).
sweep runs pipelines from a config file and shares the verbs' argument checks (verbs/options.py); reporting writes
REPORT.md and the paper's numbers from a finished sweep's record and tables (it reads the sweep's config), so no
pipeline, analysis or figure imports it.
figures is drawn from tables only: it may import errors, provenance and stage_definition and
nothing else of genir_mech. genir_mech/__init__.py and genir_mech/testing.py are exempt
(the public face and the test fixtures may reach anywhere).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "genir_mech"
LAYERS = {
    "errors": 0, "version": 0, "vocabulary": 0, "embedded": 0, "progress": 0, "provenance": 0, "results_directory": 0, "docids": 0, "stage_definition": 0, "data": 0,
    "models": 1,
    "training": 2, "retrieval": 2,
    "interventions": 3,
    "analyses": 4, "patching": 4, "heads": 4,
    "figures": 5,
    "pipelines": 6,
    "reporting": 7, "sweep": 7, "verbs": 7, "cli": 7,
}
EXEMPT = {"genir_mech", "genir_mech.testing"}
FIGURES_MAY_IMPORT = {"errors", "provenance", "stage_definition", "figures"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str) -> set[str]:
    """genir_mech modules `name` imports, at module or function level (`from pkg import sub` counts as pkg.sub)."""
    path = MODULES[name]
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                stem = f"{pkg}.{node.module}" if node.module else pkg
            else:
                stem = node.module or ""
            targets = [f"{stem}.{a.name}" for a in node.names if f"{stem}.{a.name}" in MODULES] or [stem]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("genir_mech") and target != name:
                found.add(target)
    return found


GRAPH = {name: imported_modules(name) for name in MODULES}


def top_package(name: str) -> str | None:
    """The layer key of a module: genir_mech.analyses.ablation -> analyses (None for the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_layer():
    unknown = sorted({top_package(m) for m in MODULES if m not in EXEMPT} - set(LAYERS))
    assert not unknown, f"modules outside every layer: {unknown}; add them to LAYERS in tests/test_layering.py"


def import_cycles() -> list[list[str]]:
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan: every strongly connected component of more than one module is a cycle
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    cycles = import_cycles()
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_catches_a_planted_cycle(monkeypatch):
    monkeypatch.setitem(GRAPH, "genir_mech.models.loading", GRAPH["genir_mech.models.loading"] | {"genir_mech.cli"})
    assert any("genir_mech.cli" in c and "genir_mech.models.loading" in c for c in import_cycles())


def upward_imports() -> list[str]:
    bad = []
    for name, targets in GRAPH.items():
        if name in EXEMPT:
            continue
        layer = LAYERS[top_package(name)]
        for target in targets:
            if target in EXEMPT:
                bad.append(f"{name} imports {target} (exempt modules are not importable from the package)")
            elif LAYERS[top_package(target)] > layer:
                bad.append(f"{name} (layer {layer}) imports {target} (layer {LAYERS[top_package(target)]})")
    return bad


def test_no_upward_imports():
    bad = upward_imports()
    assert not bad, "\n".join(bad)


def figure_violations() -> list[str]:
    return [f"{name} imports {t}" for name, targets in GRAPH.items() if top_package(name) == "figures" for t in targets if top_package(t) not in FIGURES_MAY_IMPORT]


def test_figures_draw_from_tables_only():
    bad = figure_violations()
    assert not bad, "\n".join(bad)


def test_verbs_import_no_other_verb_and_demo_no_cli():
    verbs = {m for m in MODULES if m.startswith("genir_mech.verbs.") and "VERB" in MODULES[m].read_text()}
    bad = [f"{name} imports {t}" for name in verbs for t in GRAPH[name] if t in verbs or t == "genir_mech.cli"]
    bad += [f"{name} imports the CLI" for name in MODULES if name.startswith("genir_mech.pipelines") and "genir_mech.cli" in GRAPH[name]]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "source,target,check",
    [("models.loading", "retrieval", upward_imports), ("analyses.ablation", "pipelines.inputs", upward_imports),
     ("figures.decoder", "pipelines.rendering", upward_imports), ("figures.decoder", "analyses.reading", figure_violations),
     ("pipelines.study_pretraining", "reporting.report", upward_imports)],
)
def test_the_checks_catch_a_planted_import(source, target, check, monkeypatch):
    # The rules must be able to fail: plant one forbidden import and see it reported.
    monkeypatch.setitem(GRAPH, f"genir_mech.{source}", GRAPH[f"genir_mech.{source}"] | {f"genir_mech.{target}"})
    assert any(f"genir_mech.{source}" in line and f"genir_mech.{target}" in line for line in check())
