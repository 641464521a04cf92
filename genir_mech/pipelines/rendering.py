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
from ..figures.patching import plot_node_families, plot_patching
from ..figures.retrieval import plot_rank_cdf
from ..figures.stages import plot_stages
from ..provenance import read_table
from ..stage_definition import StageDefinition

FIGURES, TABLES = "figures", "tables"


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

    def ready(self, frames: dict, stages: StageDefinition | None) -> bool:
        present = [n in frames and not frames[n].empty for n in self.needs]
        return (any(present) if self.any_of else all(present)) and (stages is not None or not self.needs_stages)


PRODUCTS = [
    Product("retrieval_ranks", ("per_query",), lambda f, o, s, m: plot_rank_cdf(f["per_query"], o / FIGURES / "retrieval_ranks.png", title=f"{m}: rank of the relevant document")),
    Product("fig3", ("contributions",), lambda f, o, s, m: decoder.plot_contributions(f["contributions"], o / FIGURES / "fig3_contributions.png", s, title=f"{m}: component contributions")),
    Product("fig4", ("lens",), lambda f, o, s, m: decoder.plot_lens(f["lens"], o / FIGURES / "fig4_logit_lens.png", s, title=f"{m}: vocabulary projection")),
    Product("table5", ("lens",), lambda f, o, s, m: _display(tables.docid_share_table(f["lens"], s), o, "table5_docid_share",
                                                             "Share (%) of docid tokens among the top-k tokens of the cross-attention output projection (mean over correct queries).")),
    Product("table6", ("lens_heads",), lambda f, o, s, m: _display(tables.head_tokens_table(f["lens_heads"], s), o, "table6_head_tokens",
                                                                   "Top tokens of the cross-attention heads" + (f" of stage {s.stages[min(1, len(s.stages) - 1)].name!r}" if s else "")
                                                                   + " (logit lens of each head's output).")),
    Product("fig5", ("reading_by_stage",), lambda f, o, s, m: decoder.plot_reading(f["reading_by_stage"], o / FIGURES / "fig5_reading.png", stages=s, title=f"{m}: what each component reads")),
    Product("ablation", ("ablation",), lambda f, o, s, m: decoder.plot_ablation(f["ablation"], o / FIGURES / "ablation.png", s, title=f"{m}: stage ablations")),
    Product("table3", ("ablation",), lambda f, o, s, m: _display(tables.ablation_table(f["ablation"], s), o, "table3_ablation",
                                                                 "Stage ablations: % of correct queries whose relevant document leaves rank 1 (rank>1) or falls below rank 5, 10, 100 (ranked among docids).")),
    Product("layer_ablation", ("layer_ablation",), lambda f, o, s, m: decoder.plot_layer_ablation(f["layer_ablation"], o / FIGURES / "layer_ablation.png", s, title=f"{m}: single-layer ablations")),
    Product("table3_per_layer", ("layer_ablation",), lambda f, o, s, m: _display(tables.layer_ablation_table(f["layer_ablation"]), o, "table3_per_layer",
                                                                                 "Single-layer ablations: % of correct queries whose relevant document leaves rank 1.")),
    Product("circuit", ("circuit",), lambda f, o, s, m: decoder.plot_circuit(f["circuit"], o / FIGURES / "circuit.png", title=f"{m}: minimal circuit")),
    Product("table4", ("circuit",), lambda f, o, s, m: _display(tables.circuit_table(f["circuit"]), o, "table4_circuit",
                                                                "Minimal circuit: Hits@1/5/10 (%) of the intact model and of the circuit, the circuit relative to the intact model (%), and components kept.")),
    Product("stages", ("stage_layer_means", "boundary_stability"), lambda f, o, s, m: plot_stages(f["stage_layer_means"], f["boundary_stability"], s, o / FIGURES / "stages.png", title=f"{m}: decoder stages"), needs_stages=True),
    Product("swap", ("swap_removed_docs_per_query", "swap_vanilla_per_query"), lambda f, o, s, m: plot_swap(f.get("swap_removed_docs_per_query"), f.get("swap_vanilla_per_query"), o / FIGURES / "swap.png", title=f"{m}: encoder swap"), any_of=True),
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
        raise GenIRError(f"{path}: not a readable CSV table or provenance record ({' '.join(str(exc).split())})") from None
    return frame, record  # a header without rows is a legitimate empty result: its products are skipped (Product.ready)


# -- patching and attribution: one summary table per sweep, named after its target or spec file ----------


def draw_patch_summary(name: str, summary: pd.DataFrame, target: str | None, out: str | Path, title: str) -> dict[str, str]:
    """Heatmap of the normalised logit-diff effect: the target's layout, or one per node family for a saved sweep of specs."""
    effect = summary[(summary.metric == "logit_diff") & (summary.value == "normalised")]
    label = "normalised logit-diff effect"
    if effect.empty:
        return {}
    if target:
        return {name: str(plot_patching(effect, Path(out) / FIGURES / f"{name}.png", target, label=label, title=title))}
    return {f"{name}_{k}": str(v) for k, v in plot_node_families(effect, Path(out) / FIGURES, name, title=title, label=label).items()}


def attribution_method(config: dict) -> str:
    """The estimate an attribution run shows and verifies: the chosen one, else AtP* (atp_qk) unless the QK fix was off."""
    return config.get("verify_method") or ("atp_qk" if config.get("qk_fix", True) else "atp")


def draw_attribution_summary(summary: pd.DataFrame, method: str, out: str | Path, title: str) -> dict[str, str]:
    shown = summary[(summary.method == method) & (summary.value == "estimate")]
    made = plot_node_families(shown, Path(out) / FIGURES, "attribution", title=title, label=f"{method}: estimated logit-diff change")
    return {f"attribution_{k}": str(v) for k, v in made.items()}


# -- reading a results directory back -------------------------------------------------------------------


def find_table(results_dir: Path, name: str) -> Path | None:
    direct = results_dir / f"{name}.csv"
    if direct.exists():
        return direct
    matches = sorted(results_dir.rglob(f"{name}.csv"))
    if len(matches) > 1:
        raise GenIRError(f"{results_dir}: several {name}.csv ({', '.join(map(str, matches[:4]))}); give the results directory of one model")
    return matches[0] if matches else None


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
    for path in sorted(results_dir.rglob("*_summary.csv")):
        summary, record = read_result(path)
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
        title = f"{model}: {name} ({config['direction']}, {record.get('n_pairs', '?')} pairs)"
        with _wrong_shape({name: path}, (name,)):
            if name == "attribution":
                method = attribution_method(config)
                made.update(draw_attribution_summary(summary, method, out, f"{model}: {method} ({config['direction']}, {record.get('n_pairs', '?')} pairs)"))
            else:
                made.update(draw_patch_summary(name, summary, config.get("target"), out, title))
    return made
