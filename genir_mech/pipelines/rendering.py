"""Every figure and display table the pipelines draw, keyed by the result tables it is drawn from.

    made = draw({"ablation": df}, out, stages, "dsi-synth")   # -> out/figures/ablation.png, out/tables/table3_ablation.md + .tex
    made = redraw("runs/paper/dsi-synth")                       # whatever a results directory has the tables for
    made = redraw("runs", out_dir="runs/report")                # tables found anywhere below, if each is unique

A pipeline computes its tables, writes them with provenance, then calls
`draw` on them; `genir-mech figures` calls `redraw`, which reads the same
tables back and draws the same products. So a figure is defined once, here,
and the figures/ modules only ever see DataFrames.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..analyses.reading import reading_by_stage
from ..errors import GenIRError
from ..figures import decoder, tables
from ..figures.encoder_swap import plot_swap
from ..figures.heads import plot_head_scores, plot_masking_heatmaps
from ..figures.patching import TARGET_FAMILIES, family_title, plot_node_families, plot_patching
from ..figures.retrieval import plot_rank_cdf
from ..figures.saving import save_figure
from ..figures.style import readable
from ..figures.stages import plot_stage_path, plot_stages, plot_stages_per_step
from ..provenance import TABLE_SUFFIXES, read_table, table_file
from ..stage_definition import StageDefinition

FIGURES, TABLES = "figures", "tables"


def _figure(fig, out: Path, name: str) -> Path:
    return save_figure(fig, out / FIGURES / f"{name}.png")


def _display(table: pd.DataFrame, out: Path, name: str, caption: str, index: bool = True) -> Path:
    return tables.write_display(table, out / TABLES / name, caption, index=index)[0]


SWAP_DISPLAY_METRICS = {"removed": {"n_queries", "hits@1_count", "n_documents", "mrr"}, "vanilla": {"n_queries", "mean_rank", "median_rank", "hits@1", "hits@10", "mrr"}}


SWAP_CAPTIONS = {
    "removed": "Encoder swap, removed documents (paper Table 2): {m}'s decoder on each variant's encoder output; queries of the removed documents that {m} ranks first.",
    "vanilla": "Encoder swap, vanilla encoder: {m}'s decoder on the pretrained encoder; {m}'s correct queries.",
}


def _swap_display(frame: pd.DataFrame, kind: str, out: Path, model: str) -> Path:
    """The readable display of an encoder-swap summary when it has every metric, else the plain metric pivot."""
    name, caption = f"table2_swap_{'removed_docs' if kind == 'removed' else 'vanilla'}", SWAP_CAPTIONS[kind].format(m=model or "A")
    if SWAP_DISPLAY_METRICS[kind] <= set(frame["metric"]):
        table = tables.removed_docs_table(frame) if kind == "removed" else tables.vanilla_table(frame)
        return _display(table, out, name, caption, index=False)
    return _display(tables.swap_table(frame), out, name, caption)


@dataclass(frozen=True)
class Product:
    """One figure or display table: its key, the result tables it needs (all of them, or any with `any_of`), and how it is drawn."""

    key: str
    needs: tuple[str, ...]
    draw: Callable[[dict, Path, StageDefinition | None, str], Path]
    any_of: bool = False
    needs_stages: bool = False  # drawn only when the results record a stage definition
    per_step: bool = False  # drawn from tables of several decoding steps (a `step` column); the others need one step

    def ready(self, frames: dict, stages: StageDefinition | None) -> bool:
        present = [n in frames and not frames[n].empty for n in self.needs]
        several = [n in frames and "step" in frames[n].columns and frames[n]["step"].nunique() > 1 for n in self.needs]
        # a one-step figure of several steps' rows would average the steps together; the per-step figure needs them apart
        steps_fit = any(several) if self.per_step else not any(several)
        return (any(present) if self.any_of else all(present)) and (stages is not None or not self.needs_stages) and steps_fit


PRODUCTS = [
    Product("retrieval_ranks", ("per_query",), lambda f, o, s, m: _figure(plot_rank_cdf(f["per_query"], title=f"{m}: rank of the relevant document"), o, "retrieval_ranks")),
    Product("fig3", ("contributions",), lambda f, o, s, m: _figure(decoder.plot_contributions(f["contributions"], None, s, title=f"{m}: component contributions"), o, "fig3_contributions")),
    Product("fig4", ("lens",), lambda f, o, s, m: _figure(decoder.plot_lens(f["lens"], None, s, title=f"{m}: logit lens (rank in the vocabulary projection)"), o, "fig4_logit_lens")),
    Product("table5", ("lens",), lambda f, o, s, m: _display(tables.docid_share_table(f["lens"], s), o, "table5_docid_share",
                                                             "Share (%) of docid tokens among the top-k tokens of the cross-attention output projection (mean over correct queries).")),
    Product("table6", ("lens_heads",), lambda f, o, s, m: _display(tables.head_tokens_table(f["lens_heads"], s), o, "table6_head_tokens",
                                                                   "Top tokens of the cross-attention heads" + (f" of stage {s.stages[min(1, len(s.stages) - 1)].name!r}" if s else "")
                                                                   + " (logit lens of each head's output).")),
    Product("fig5", ("reading_by_stage",), lambda f, o, s, m: _figure(decoder.plot_reading(f["reading_by_stage"], None, stages=s, title=f"{m}: what each component reads"), o, "fig5_reading")),
    Product("ablation", ("ablation",), lambda f, o, s, m: _figure(decoder.plot_ablation(f["ablation"], None, s, title=f"{m}: stage ablations"), o, "ablation")),
    Product("table3", ("ablation",), lambda f, o, s, m: _display(tables.ablation_table(f["ablation"], s), o, "table3_ablation",
                                                                 "Stage ablations: % of correct queries whose relevant document leaves rank 1 (rank>1) or falls below rank 5, 10, 100 (ranked among docids).")),
    Product("layer_ablation", ("layer_ablation",), lambda f, o, s, m: _figure(decoder.plot_layer_ablation(f["layer_ablation"], None, s, title=f"{m}: single-layer ablations"), o, "layer_ablation")),
    Product("table3_per_layer", ("layer_ablation",), lambda f, o, s, m: _display(tables.layer_ablation_table(f["layer_ablation"]), o, "table3_per_layer",
                                                                                 "Single-layer ablations: % of correct queries whose relevant document leaves rank 1.")),
    Product("circuit", ("circuit",), lambda f, o, s, m: _figure(decoder.plot_circuit(f["circuit"], title=f"{m}: minimal circuit"), o, "circuit")),
    Product("table4", ("circuit",), lambda f, o, s, m: _display(tables.circuit_table(f["circuit"]), o, "table4_circuit",
                                                                "Minimal circuit: Hits@1/5/10 (%) of the intact model and of the circuit, the circuit relative to the intact model (%), and components kept.")),
    # boundary_stability is empty for a one-layer decoder (no boundary to place); the profile is still drawn
    Product("stages", ("stage_layer_means",), lambda f, o, s, m: _figure(plot_stages(f["stage_layer_means"], f.get("boundary_stability", pd.DataFrame(columns=["boundary", "selected", "frequency", "frequency_within_1"])), s, title=f"{m}: decoder stages"), o, "stages"), needs_stages=True),
    Product("stage_path", ("stage_path",), lambda f, o, s, m: _figure(plot_stage_path(f["stage_path"], None, s, title=f"{m}: the stage count along the knob"), o, "stage_path")),
    Product("stages_per_step", ("stage_layer_means", "step_stages"), lambda f, o, s, m: _figure(plot_stages_per_step(f["stage_layer_means"], f["step_stages"], title=f"{m}: decoder stages per docid step"), o, "stages_per_step"), per_step=True),
    Product("swap", ("swap_removed_docs_per_query", "swap_vanilla_per_query"), lambda f, o, s, m: _figure(plot_swap(f.get("swap_removed_docs_per_query"), f.get("swap_vanilla_per_query"), title=f"{m}: encoder swap"), o, "swap"), any_of=True),
    Product("table2_swap_removed_docs", ("swap_removed_docs",), lambda f, o, s, m: _swap_display(f["swap_removed_docs"], "removed", o, m)),
    Product("table2_swap_vanilla", ("swap_vanilla",), lambda f, o, s, m: _swap_display(f["swap_vanilla"], "vanilla", o, m)),
    Product("retrieval_scores", ("retrieval_scores",), lambda f, o, s, m: plot_head_scores(f["retrieval_scores"], o / FIGURES / "retrieval_scores.png", title=f"{m}: retrieval score")),
    Product("qr_scores", ("qr_heads",), lambda f, o, s, m: plot_head_scores(f["qr_heads"], o / FIGURES / "qr_scores.png", value="qr_score", title=f"{m}: QRHead score")),
    Product("masking_heatmaps", ("masking",), lambda f, o, s, m: plot_masking_heatmaps(f["masking"], o / FIGURES / "masking_heatmaps.png", title=f"{m}: NIAH accuracy under masking")),
]
RESULT_NAMES = tuple(dict.fromkeys(n for p in PRODUCTS for n in p.needs)) + ("reading",)


# what a result table of the wrong shape (missing columns, wrong types) raises inside pandas and the plotting code
SHAPE_ERRORS = (KeyError, ValueError, TypeError, IndexError, AttributeError)


def draw(frames: dict[str, pd.DataFrame], out: str | Path, stages: StageDefinition | None, model: str,
         sources: dict[str, Path] | None = None) -> dict[str, str]:
    """Draw every product whose tables are in `frames`; returns key -> path written.

    With `sources` (table name -> the CSV it was read from), a table of the wrong shape raises a GenIRError naming that file.
    """
    out = Path(out)
    with _wrong_shape(sources, ("reading",)):
        if "reading_by_stage" not in frames and "reading" in frames and stages is not None:
            # a results folder with only the per-unit reading table: group it by the recorded stages
            frames = {**frames, "reading_by_stage": reading_by_stage(frames["reading"], stages)}
    made = {}
    for p in PRODUCTS:
        if p.ready(frames, stages):
            with _wrong_shape(sources, p.needs):
                made[p.key] = str(p.draw(frames, out, stages, model))
    return made


@contextmanager
def _wrong_shape(sources: dict[str, Path] | None, names: tuple[str, ...]):
    try:
        yield
    except SHAPE_ERRORS as exc:
        files = [str(sources[n]) for n in names if n in sources] if sources else []
        if not files:
            raise
        raise GenIRError(f"{', '.join(files)}: not a result table of the expected shape ({type(exc).__name__}: {exc})") from None


def read_result(path: Path) -> tuple[pd.DataFrame, dict]:
    """A result table and its provenance; an empty, unparsable or non-UTF-8 file raises a GenIRError naming it."""
    try:
        frame, record = read_table(path.with_suffix(""))
    except pd.errors.EmptyDataError:
        raise GenIRError(f"{path}: empty file (0 bytes or no header); rerun the experiment that writes it") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise GenIRError(f"{path}: not a readable CSV or Parquet table or provenance record ({' '.join(str(exc).split())})") from None
    return frame, record  # a header without rows is a legitimate empty result: its products are skipped (Product.ready)


# -- patching and attribution: one summary table per sweep, named after its target or spec file ----------


def position_tokens(table: pd.DataFrame | None) -> dict[int, str] | None:
    """Position -> the clean query token most pairs have there (from a run's position_tokens table)."""
    if table is None or table.empty:
        return None
    return {int(p): str(t) for p, t in zip(table["position"], table["token"])}


def draw_patch_summary(name: str, summary: pd.DataFrame, target: str | None, out: str | Path, context: str,
                       tokens: dict[int, str] | None = None) -> dict[str, str]:
    """Heatmap of the normalised logit-diff effect: the target's layout, or one per node family for a saved sweep of specs."""
    effect = summary[(summary.metric == "logit_diff") & (summary.quantity == "normalised")]
    what, label = "restored share of the logit difference (exact patching)", "normalised logit-difference effect"
    if effect.empty:
        return {}
    if target:
        title = family_title(context, what, TARGET_FAMILIES.get(target, target))
        return {name: str(_figure(plot_patching(effect, target, title=title, label=label, tokens=tokens), Path(out), name))}
    made = plot_node_families(effect, Path(out) / FIGURES, name, context=context, what=what, label=label, tokens=tokens)
    return {f"{name}_{k}": str(v) for k, v in made.items()}


def attribution_method(config: dict) -> str:
    """The estimate an attribution run shows and verifies: the chosen one, else AtP* (atp_qk) unless the QK fix was off."""
    return config.get("verify_method") or ("atp_qk" if config.get("qk_fix", True) else "atp")


ESTIMATE_NAMES = {"atp": "AtP", "atp_qk": "AtP*"}


def draw_attribution_summary(summary: pd.DataFrame, method: str, out: str | Path, context: str, tokens: dict[int, str] | None = None,
                              prefix: str = "attribution") -> dict[str, str]:
    """One heatmap per node family of the attribution estimate, titled by the estimate and the nodes it covers (`<prefix>_<family>.png`)."""
    shown = summary[(summary.method == method) & (summary.quantity == "estimate")]
    name = ESTIMATE_NAMES.get(method, method)
    made = plot_node_families(shown, Path(out) / FIGURES, prefix, context=context, what=f"{name} estimate of the change in logit difference",
                              label=f"{name}: estimated logit-difference change", tokens=tokens)
    return {f"{prefix}_{k}": str(v) for k, v in made.items()}


# -- reading a results directory back -------------------------------------------------------------------


def find_table(results_dir: Path, name: str) -> Path | None:
    """The file of table `name` (CSV or Parquet: provenance.table_file) in `results_dir`, else the one below it, if unique."""
    direct = table_file(results_dir / name)
    if direct is not None:
        return direct
    matches = sorted(p for suffix in TABLE_SUFFIXES for p in results_dir.rglob(f"{name}{suffix}"))
    if len(matches) > 1:
        raise GenIRError(f"{results_dir}: several {name} tables ({', '.join(map(str, matches[:4]))}); give the results directory of one model")
    return matches[0] if matches else None


def patching_context(model: str, direction: str, n_pairs) -> str:
    """`dsi-synth, clean into corrupted, 32 pairs`: the start of every patching title."""
    return f"{model}, {readable(direction)}, {n_pairs} pairs"


def _table_beside(summary_path: Path, name: str) -> pd.DataFrame | None:
    """The table `name` written by the same run as `summary_path` (same folder), if any."""
    path = summary_path.with_name(f"{name}.csv")
    return read_result(path)[0] if path.exists() else None


def recorded_stages(records: dict[str, dict]) -> StageDefinition | None:
    """The stage definition the results were computed with (a pipeline's config, or the one a localisation found)."""
    for record in records.values():
        stages = (record.get("config") or {}).get("stages") or record.get("stages")
        if isinstance(stages, dict) and stages.get("stages"):
            return StageDefinition.from_json(stages, "provenance")
    return None


def redraw(results_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, str]:
    """Draw every figure and table that `results_dir` has the result tables for, under `out_dir` (default `results_dir`)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise GenIRError(f"{results_dir}: no such results directory")
    frames, records, sources = {}, {}, {}
    for name in RESULT_NAMES:
        path = find_table(results_dir, name)
        if path is not None:
            frames[name], records[name] = read_result(path)
            sources[name] = path
    sweeps = []
    for path in sorted(p for suffix in TABLE_SUFFIXES for p in results_dir.rglob(f"*_summary{suffix}")):
        summary, record = read_result(path)
        if "quantity" not in summary.columns and "value" in summary.columns:
            summary = summary.rename(columns={"value": "quantity"})  # written before the label column got its own name
        if "direction" in (record.get("config") or {}):  # written by the patch or attribute pipeline
            sweeps.append((path.stem[: -len("_summary")], summary, record, path))
    if not frames and not sweeps:
        raise GenIRError(f"{results_dir}: no result tables ({', '.join(n + '.csv' for n in RESULT_NAMES)}, *_summary.csv); run an experiment first")
    out = Path(out_dir or results_dir)
    all_records = {**records, **{name: r for name, _, r, _ in sweeps}}
    model = next((Path(r["model"]).name for r in all_records.values() if r.get("model")), "")
    made = draw(frames, out, recorded_stages(records), model, sources)
    for name, summary, record, path in sweeps:
        config = record["config"]
        context = patching_context(model, config["direction"], record.get("n_pairs", "?"))
        tokens = position_tokens(_table_beside(path, "position_tokens"))
        with _wrong_shape({name: path}, (name,)):
            if name == "attribution":
                made.update(draw_attribution_summary(summary, attribution_method(config), out, context, tokens))
            else:
                made.update(draw_patch_summary(name, summary, config.get("target"), out, context, tokens))
    return made
