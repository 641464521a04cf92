"""Draw every figure and write every table that a results directory has the data for.

    made = render_results("runs/paper/dsi-synth")          # -> figures/*.png, tables/*.md + *.tex beside the results
    made = render_results("runs", out_dir="runs/report")    # finds each result table anywhere below, if it is unique

Result tables are found by name (contributions.csv, lens.csv, ablation.csv, ...)
directly in the directory or, failing that, once anywhere below it. The stage
definition drawn and tabulated is the one recorded in the results' provenance.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analyses.reading import reading_by_stage
from ..errors import GenIRError
from ..provenance import read_table
from ..stage_definition import StageDefinition
from . import decoder, tables

RESULT_NAMES = (
    "contributions", "lens", "lens_heads", "ablation", "layer_ablation", "circuit", "reading", "reading_by_stage", "swap_removed_docs", "swap_vanilla",
)


def find_table(results_dir: Path, name: str) -> Path | None:
    direct = results_dir / f"{name}.csv"
    if direct.exists():
        return direct
    matches = sorted(results_dir.rglob(f"{name}.csv"))
    if len(matches) > 1:
        raise GenIRError(f"{results_dir}: several {name}.csv ({', '.join(map(str, matches[:4]))}); pass the results directory of one model")
    return matches[0] if matches else None


def load_results(results_dir: str | Path) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise GenIRError(f"{results_dir}: no such results directory")
    frames, records = {}, {}
    for name in RESULT_NAMES:
        path = find_table(results_dir, name)
        if path is not None:
            frames[name], records[name] = read_table(path.with_suffix(""))
    if not frames:
        raise GenIRError(f"{results_dir}: no result tables ({', '.join(n + '.csv' for n in RESULT_NAMES)}); run an analysis verb first")
    return frames, records


def recorded_stages(records: dict[str, dict]) -> StageDefinition | None:
    for record in records.values():
        stages = (record.get("config") or {}).get("stages")
        if stages:
            return StageDefinition.from_json(stages, "provenance")
    return None


def render_results(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, str]:
    """Write figures/ and tables/ under `out_dir` (default: `results_dir`); returns what was written, by name."""
    frames, records = load_results(results_dir)
    out = Path(out_dir or results_dir)
    stages = recorded_stages(records)
    model = next((Path(r["model"]).name for r in records.values() if r.get("model")), "")
    made: dict[str, str] = {}
    fig, tab = out / "figures", out / "tables"

    if "contributions" in frames:
        made["fig3"] = str(decoder.plot_contributions(frames["contributions"], fig / "fig3_contributions.png", stages, title=f"{model}: component contributions"))
    if "lens" in frames:
        made["fig4"] = str(decoder.plot_lens(frames["lens"], fig / "fig4_logit_lens.png", stages, title=f"{model}: vocabulary projection"))
        caption = "Share (%) of docid tokens among the top-k tokens of the cross-attention output projection (mean over correct queries)."
        made["table5"] = str(tables.write_display(tables.docid_share_table(frames["lens"], stages), tab / "table5_docid_share", caption)[0])
    if "lens_heads" in frames and not frames["lens_heads"].empty:
        caption = "Top tokens of the cross-attention heads" + (f" of stage {stages.stages[min(1, len(stages.stages) - 1)].name!r}" if stages else "") + " (logit lens of each head's output)."
        made["table6"] = str(tables.write_display(tables.head_tokens_table(frames["lens_heads"], stages), tab / "table6_head_tokens", caption)[0])
    by_stage = frames.get("reading_by_stage")
    if by_stage is None and "reading" in frames and stages is not None:
        by_stage = reading_by_stage(frames["reading"], stages)
    if by_stage is not None:
        made["fig5"] = str(decoder.plot_reading(by_stage, fig / "fig5_reading.png", stages=stages, title=f"{model}: what each component reads"))
    if "ablation" in frames:
        caption = "Stage ablations: % of correct queries whose relevant document leaves rank 1 (rank>1) or falls below rank 5, 10, 100 (ranked among docids)."
        made["table3"] = str(tables.write_display(tables.ablation_table(frames["ablation"], stages), tab / "table3_ablation", caption)[0])
    if "layer_ablation" in frames:
        caption = "Single-layer ablations: % of correct queries whose relevant document leaves rank 1."
        made["table3_per_layer"] = str(tables.write_display(tables.layer_ablation_table(frames["layer_ablation"]), tab / "table3_per_layer", caption)[0])
    if "circuit" in frames:
        caption = "Minimal circuit: Hits@1/5/10 (%) of the intact model and of the circuit, the circuit relative to the intact model (%), and components kept."
        made["table4"] = str(tables.write_display(tables.circuit_table(frames["circuit"]), tab / "table4_circuit", caption)[0])
    for name, caption in (("swap_removed_docs", "Encoder swap, removed documents (Table 2)."), ("swap_vanilla", "Encoder swap, vanilla encoder.")):
        if name in frames:
            made[f"table2_{name}"] = str(tables.write_display(tables.swap_table(frames[name]), tab / f"table2_{name}", caption)[0])
    return made
