"""One model's results in a finished sweep, found by experiment: each unit's folder, summary, tables and figures.

    results = SweepResults.of(manifest, "dsi")             # manifest: run_sweep's return value (SWEEP.json)
    results.summary("eval")["hits@1"]                      # the summary of the model's eval experiment
    results.table("ablate", "layer_ablation")              # <out>/dsi/ablate/layer_ablation.csv (or .parquet), or None
    results.figure("patch", "head")                        # <out>/dsi/patch/head/figures/head.png, or None

An experiment is found by the pipeline it ran (`run` in SWEEP.json; the first
finished one when a sweep runs a pipeline twice on the model), and a table is
read from that experiment's folder only: the stage localiser also writes
contributions and layer_ablation tables, and they are not the decoder
analyses' ones. A table is read only as part of a complete result
(provenance.read_table).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..provenance import read_table, table_file

DONE = "done"  # a unit's status in SWEEP.json when its folder is complete


@dataclass
class SweepResults:
    """The units of one model in a finished sweep: experiment name (`ablate`, `patch/head`) -> its SWEEP.json record."""

    model: str
    units: dict[str, dict]

    @classmethod
    def of(cls, manifest: dict, model: str) -> SweepResults:
        units = {uid.split("/", 1)[1]: unit for uid, unit in manifest["units"].items() if uid.split("/", 1)[0] == model}
        return cls(model, units)

    def finished(self, run: str) -> list[tuple[str, dict]]:
        """(experiment name, record) of every finished unit of pipeline `run`, in sweep order."""
        return [(name, unit) for name, unit in self.units.items() if unit["run"] == run and unit["status"] == DONE]

    def summary(self, run: str) -> dict:
        """The summary of the model's (first finished) `run` experiment; {} when there is none."""
        found = self.finished(run)
        return found[0][1]["summary"] if found else {}

    def folder(self, run: str) -> Path | None:
        found = self.finished(run)
        return Path(found[0][1]["folder"]) if found else None

    def table(self, run: str, name: str) -> pd.DataFrame | None:
        """The table `name` (CSV or Parquet) in the folder of the `run` experiment; None when it has none."""
        folder = self.folder(run)
        path = table_file(folder / name) if folder is not None else None
        return read_table(path)[0] if path is not None else None

    def patching(self) -> dict[str, dict]:
        """Exact patching summaries by patched target (`component`, `head`, or a spec file's name)."""
        return {patched_name(unit["summary"]): unit["summary"] for _, unit in self.finished("patch")}

    def figure(self, run: str, key: str) -> str | None:
        """The path of figure or display table `key` that a `run` experiment drew (for patching: `key` is the target)."""
        for _, unit in self.finished(run):
            path = unit["summary"].get("figures", {}).get(key)
            if path:
                return path
        return None

    def seconds(self) -> dict[str, float]:
        """Wall time of every unit, by experiment name."""
        return {name: unit["seconds"] for name, unit in self.units.items()}

    def not_run(self) -> dict[str, str]:
        """Experiment name -> why it has no results (`skipped: ...` or `failed: ...`)."""
        return {name: f"{unit['status']}: {unit['reason']}" for name, unit in self.units.items() if unit["status"] != DONE}


def patched_name(summary: dict) -> str:
    """What a patch run patched: its tables are `<target>_summary` (or `<spec file stem>_summary`)."""
    return Path(summary.get("summary", "")).name.split(".")[0].removesuffix("_summary")
