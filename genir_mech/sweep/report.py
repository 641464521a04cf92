"""REPORT.md of the paper example: the demo's report (pipelines.report.write_report) from a finished sweep's unit summaries.

    manifest = run_sweep(load_config("examples/paper.yaml"))
    paper_report(config, manifest)         # -> <out>/REPORT.md

The report is drawn from what the units recorded (SWEEP.json): the retrieval
metrics, the located stages, the encoder swap, the patching and attribution
runs, every figure and the wall time of each unit.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GenIRError
from .caches import ModelPool
from .config import SweepConfig


def paper_report(config: SweepConfig, manifest: dict, model: str | None = None) -> Path:
    """Write `<out>/REPORT.md` for `model` (default: the first model) from the units of a finished sweep."""
    from ..pipelines.report import write_report
    model = model or next(iter(config.models))
    units = {uid.split("/", 1)[1]: u for uid, u in manifest["units"].items() if uid.split("/", 1)[0] == model}
    by_run: dict[str, list] = {}
    for name, unit in units.items():
        by_run.setdefault(unit["run"], []).append((name, unit["summary"]))
    for needed in ("eval", "stages"):
        if needed not in by_run:
            raise GenIRError(f"{config.source}: the report needs an {needed} experiment on model {model!r}")
    metrics = {k: v for k, v in by_run["eval"][0][1].items() if k not in ("figures", "correct_queries")}
    found = by_run["stages"][0][1]
    swap = by_run["swap"][0][1] if "swap" in by_run else {}
    patching = {name.rsplit("/", 1)[-1]: s for name, s in by_run.get("patch", []) if s}
    patching.update({"attribution": s for _, s in by_run.get("attribute", []) if s})
    figures = {f"{name.replace('/', '_')}_{k}": v for name, unit in units.items() for k, v in unit["summary"].get("figures", {}).items()}
    timings = {name: unit["seconds"] for name, unit in units.items()}
    not_run = {name: f"{unit['status']}: {unit['reason']}" for name, unit in units.items() if unit["status"] != "done"}
    return write_report(config.out, ModelPool(config).model(model), metrics, found, swap, patching, figures, timings,
                        tables=config.out / model, not_run=not_run)
