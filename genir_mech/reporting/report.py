"""The demo's report: what was found, in sentences with numbers, above each figure and table; and the same numbers as LaTeX macros.

    manifest = run_sweep(load_config("examples/paper.yaml"))     # what `genir-mech demo` runs
    paper_report(config, manifest)                               # -> <out>/REPORT.md and <out>/numbers.tex

The report is drawn from what the sweep recorded (SWEEP.json): the units'
summaries and the tables and figures in each experiment's folder
`<out>/<model>/<experiment>/` (reporting.results), and the model's shape from
its config and tokenizer, so no weights are loaded. Every number in REPORT.md
and in paper/main.tex comes from `facts.demo_facts`; the paper `\\input`s
numbers.tex and never types a number in.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from ..embedded import display_name
from ..errors import GenIRError
from ..figures.tables import write_macros
from ..provenance import written_atomically
from ..sweep.config import SweepConfig, model_shape
from .facts import demo_facts, model_facts
from .results import SweepResults


def paper_report(config: SweepConfig, manifest: dict, model: str | None = None) -> Path:
    """Write `<out>/REPORT.md` and `<out>/numbers.tex` for `model` (default: the config's first model) from a finished sweep."""
    model = model or next(iter(config.models))
    results = SweepResults.of(manifest, model)
    for needed in ("eval", "stages"):
        if not any(unit["run"] == needed for unit in results.units.values()):
            raise GenIRError(f"{config.source}: the report needs an {needed} experiment on model {model!r}")
    return write_report(config.out, model_description(config, model), results)


def model_description(config: SweepConfig, name: str):
    """The sweep's model `name` as the report describes it: its shape (sweep.config.model_shape reads the config) and its
    docids (from the tokenizer, or docids.json beside the weights), without loading the weights."""
    from ..models.loading import load_docids, load_tokenizer
    from ..models.names import locate_model
    entry = config.models[name]
    shape = model_shape(config, name)
    docids = load_docids(locate_model(entry.path, entry.revision).source, load_tokenizer(entry.path, entry.revision), entry.docid_pattern)
    return SimpleNamespace(name=shape.name, path=entry.path, adapter=shape.adapter, n_layers=shape.n_layers, docids=docids)


def _rel(path: str, out: Path) -> str:
    resolved, base = Path(path).resolve(), out.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(path)


def _captioned_figure(path: str | None, out: Path, caption: str) -> list[str]:
    if not path:
        return []
    return [caption, "", f"![{Path(path).stem}]({_rel(path, out)})", ""]


def _table_md(path: str | None) -> list[str]:
    """The Markdown display table (its first line is its caption)."""
    if not path:
        return []
    return [Path(path).read_text().strip(), ""]


def _not_run_lines(not_run: dict[str, str]) -> list[str]:
    """The experiments without results and why, so a reader never mistakes a missing section for a finding."""
    if not not_run:
        return []
    return ["Experiments without results (their sections below are empty):", "", *[f"- `{k}`: {v}" for k, v in not_run.items()], ""]


ATTRIBUTION_FAMILIES = (("heads", "AtP* estimate per attention head."), ("components", "AtP* estimate per decoder component."),
                        ("encoder_positions", "AtP* estimate per encoder output position (labelled with the most common token there)."),
                        ("encoder_layer_positions", "AtP* estimate per encoder layer and position."), ("resid", "AtP* estimate per decoder residual stream."))


def write_report(out: str | Path, model, results: SweepResults) -> Path:
    """`<out>/REPORT.md` (findings in sentences, then each figure and table under its caption) and `<out>/numbers.tex`.

    `model`: what `model_description` returns (or a loaded GenIRModel); `results`: the model's units in the finished sweep.
    An experiment that was skipped or failed is listed near the top with its reason and in the time table.
    """
    out = Path(out)
    not_run = results.not_run()
    f = {**model_facts(model), **demo_facts(results)}
    g = lambda name, default="?": f.get(name, default)  # noqa: E731
    fig = results.figure
    found = results.summary("stages")
    encoder_layers = model.n_layers("encoder") if "encoder" in model.adapter.sides else 0
    lines = [
        f"# genir_mech demo: {model.name}",
        "",
        f"Model `{display_name(model.path)}`: {encoder_layers} encoder and {model.n_layers('decoder')} decoder layers, {model.adapter.n_heads} heads, "
        f"{len(model.docids)} docids. Every number below is computed from the tables in this folder (also written as LaTeX macros to `numbers.tex`).",
        "",
        *_not_run_lines(not_run),
        "## Retrieval (test split, held-out templates)",
        "",
        f"On {g('RetrievalQueries')} test queries the model ranks the relevant document first for a share of {g('RetrievalHitsOne')} "
        f"(Hits@1), within the top 10 for {g('RetrievalHitsTen')}, with an MRR of {g('RetrievalMRR')}.",
        "",
        *_captioned_figure(fig("eval", "retrieval_ranks"), out, "Share of queries whose relevant document lies within each rank (log scale)."),
        "## Stages (located automatically)",
        "",
        f"Over {g('StagesQueries')} correct queries, the stage localiser (segments of the per-layer profile, kept only where the "
        f"paper's ablation and logit-lens tests tell them apart, and named by those tests) finds {g('StagesFound')} stage(s): "
        f"{g('StagesList').replace('--', '-')}; {g('StagesBootstrapAgreement')}% of the bootstrap resamples agree on that number of stages.",
        "",
        "```",
        found.get("report", "").strip(),
        "```",
        "",
        *_captioned_figure(fig("stages", "stages"), out, "Per-layer contribution ratio, cosine with the residual stream and single-layer ablation effect, "
                           "with the located stages shaded and the bootstrap frequency of a boundary before each layer."),
        "## Decoder analyses with the located stages",
        "",
    ]
    if "CrossRatioFirst" in f:
        lines += [f"Cross-attention's contribution ratio goes from {g('CrossRatioFirst')} at layer 0 to {g('CrossRatioLast')} at layer {g('LastLayer')}, "
                  f"the MLPs' from {g('MLPRatioFirst')} to {g('MLPRatioLast')}; the MLPs' cosine with the residual stream goes from "
                  f"{g('MLPCosFirst')} to {g('MLPCosLast')}.", ""]
    lines += _captioned_figure(fig("contributions", "fig3"), out, "Fig. 3: each component's share of its layer's update (top) and its cosine with the residual stream (bottom).")
    if "LensDocidShareMin" in f:
        lines += [("The relevant docid reaches median rank 1 in the residual stream after layer "
                   f"{g('LensFirstRankOneLayer')}'s cross-attention. " if "LensFirstRankOneLayer" in f else "")
                  + f"{g('LensDocidShareMin')}-{g('LensDocidShareMax')}% of each layer's cross-attention top-10 tokens are docids.", ""]
    lines += _captioned_figure(fig("lens", "fig4"), out, "Fig. 4: logit lens. Rank of the relevant docid, docid and other tokens in the residual stream (left) and in each component's output (right).")
    lines += _table_md(fig("lens", "table5"))
    if "AblateCrossMin" in f:
        lines += [f"Zeroing or mean-ablating cross-attention in a whole stage sends {g('AblateCrossMin')}-{g('AblateCrossMax')}% of the "
                  f"{g('AblateQueries')} correct queries off rank 1; the MLPs {g('AblateMLPMin', '-')}-{g('AblateMLPMax', '-')}%, self-attention "
                  f"{g('AblateSelfMin', '-')}-{g('AblateSelfMax', '-')}%. No single layer's component moves more than {g('LayerAblateMax')}%.", ""]
    lines += _captioned_figure(fig("ablate", "ablation"), out, "Stage ablations: % of correct queries whose relevant document leaves rank 1.")
    lines += _table_md(fig("ablate", "table3"))
    lines += _captioned_figure(fig("ablate", "layer_ablation"), out, "Single-layer ablations: % of correct queries whose relevant document leaves rank 1.")
    if "CircuitHitsOne" in f:
        lines += [f"The paper's minimal circuit keeps Hits@1 at {g('CircuitHitsOne')}% against {g('CircuitIntactHitsOne')}% for the intact model.", ""]
    lines += _captioned_figure(fig("circuit", "circuit"), out, "Minimal circuit: Hits@k of the intact model and of the circuit.")
    lines += _table_md(fig("circuit", "table4"))
    lines += _captioned_figure(fig("read", "fig5"), out, "Fig. 5: what the MLP neurons and cross-attention heads of each stage read (share of units whose top source is each earlier component).")
    lines += ["## Encoder swap", ""]
    if "SwapRemovedHits" in f:
        lines += [f"A's decoder on the encoder output of a variant trained without {g('SwapRemovedDocs')} documents ranks {g('SwapRemovedHits')} of those documents' "
                  f"queries first (MRR {g('SwapRemovedMRR')}).", ""]
    if "SwapVanillaMeanRank" in f:
        lines += [f"On the vanilla pretrained encoder's output, A's decoder puts the relevant document at mean rank {g('SwapVanillaMeanRank')} "
                  f"over {g('SwapVanillaQueries')} queries, within rank 10 for {g('SwapVanillaWithinTen')}%.", ""]
    lines += _captioned_figure(fig("swap", "swap"), out, "Encoder swap: Hits@1 per condition on the removed documents (left) and rank distribution with the vanilla encoder (right).")
    lines += _table_md(fig("swap", "table2_swap_removed_docs")) + _table_md(fig("swap", "table2_swap_vanilla"))
    lines += ["## Patching", ""]
    if "PatchTopComponent" in f:
        lines += [f"Over {g('PatchPairs')} clean/corrupted pairs, patching `{g('PatchTopComponent')}` from the clean run restores the largest share of "
                  f"the logit difference among decoder components ({g('PatchTopComponentEffect')})"
                  + (f"; the largest single head is `{g('PatchTopHead')}` ({g('PatchTopHeadEffect')})." if "PatchTopHead" in f else "."), ""]
    lines += _captioned_figure(fig("patch", "component"), out, "Activation patching of each decoder component: restored share of the logit difference.")
    lines += _captioned_figure(fig("patch", "head"), out, "Activation patching of each attention head: restored share of the logit difference.")
    if "AtPSpearman" in f:
        lines += [f"Attribution patching (AtP*) ranks its top candidates like exact patching does: Spearman {g('AtPSpearman')}.", ""]
    for family, caption in ATTRIBUTION_FAMILIES:
        lines += _captioned_figure(fig("attribute", f"attribution_{family}"), out, caption)
    lines += ["## Time per experiment", "", "| experiment | seconds | result |", "| --- | ---: | --- |"]
    lines += [f"| {k} | {v} | {not_run[k].split(':', 1)[0] if k in not_run else 'done'} |" for k, v in results.seconds().items()]
    path = out / "REPORT.md"
    with written_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_macros(f, out / "numbers.tex")
    return path
