"""The demo's report: what was found, in sentences with numbers, above each figure and table; and the same numbers as LaTeX macros.

    path = write_report(out, gm, metrics, found, swap, patching, figures, timings)   # -> <out>/REPORT.md and <out>/numbers.tex
    facts = demo_facts(out, metrics, found, patching)                                # name -> formatted number, read from the result tables

Every number in REPORT.md and in paper/main.tex comes from `demo_facts`, which
reads the tidy tables the demo's pipelines wrote (and the summaries they
returned): the paper `\\input`s numbers.tex and never types a number in.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..figures.tables import latex_escape
from ..provenance import TABLE_SUFFIXES, written_atomically


def _table(root: Path, name: str) -> pd.DataFrame | None:
    """The table `name` (CSV or Parquet) wherever it lies under `root`: `<root>/decoder/` in a `run_demo` folder,
    `<root>/<experiment>/` in a sweep's model folder; staging and hidden folders are not results."""
    for path in sorted(root.rglob(f"{name}.*")):
        if path.suffix in TABLE_SUFFIXES and not any(part.startswith(".") or ".partial-" in part for part in path.relative_to(root).parts):
            return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return None


def _pct(x: float) -> str:
    return f"{x:.1f}"


def model_facts(gm) -> dict[str, str]:
    """The model's shape: layers per side, heads, docids."""
    return {"ModelEncoderLayers": str(gm.n_layers("encoder")) if "encoder" in gm.adapter.sides else "0", "ModelDecoderLayers": str(gm.n_layers("decoder")),
            "ModelHeads": str(gm.adapter.n_heads), "ModelDocids": f"{len(gm.docids):,}"}


def _retrieval_facts(metrics: dict) -> dict[str, str]:
    facts = {"RetrievalQueries": f"{int(metrics.get('n_queries', 0)):,}"}
    for key, name in (("hits@1", "HitsOne"), ("hits@5", "HitsFive"), ("hits@10", "HitsTen"), ("mrr", "MRR")):
        if key in metrics:
            facts[f"Retrieval{name}"] = f"{float(metrics[key]):.3f}"
    return facts


def _stage_facts(found: dict) -> dict[str, str]:
    if not found:
        return {}
    stages = found.get("stages") or []
    distribution = found.get("n_stages_bootstrap") or {}
    n = len(stages)
    facts = {"StagesFound": str(n), "StagesQueries": str(found.get("n_queries", "")),
             "StagesList": ", ".join(f"{s['name']} (layers {min(s['layers'])}--{max(s['layers'])})" for s in stages if s.get("layers")),
             "StagesBootstrapAgreement": _pct(100 * float(distribution.get(n, distribution.get(str(n), 0.0))))}
    return facts


def _contribution_facts(out: Path) -> dict[str, str]:
    df = _table(out, "contributions")
    if df is None or df.empty:
        return {}
    df = df[df.side == "decoder"] if "side" in df else df
    med = df.groupby(["metric", "component", "layer"]).value.median()
    first, last = int(df.layer.min()), int(df.layer.max())
    facts = {"DecoderLayers": str(last + 1), "LastLayer": str(last)}
    for kind, name in (("cross_attn", "Cross"), ("mlp", "MLP"), ("self_attn", "Self")):
        for metric, mname in (("ratio", "Ratio"), ("cos_residual", "Cos")):
            if (metric, kind, first) in med.index:
                facts[f"{name}{mname}First"] = f"{med[(metric, kind, first)]:+.2f}" if metric == "cos_residual" else f"{med[(metric, kind, first)]:.2f}"
                facts[f"{name}{mname}Last"] = f"{med[(metric, kind, last)]:+.2f}" if metric == "cos_residual" else f"{med[(metric, kind, last)]:.2f}"
    return facts


def _ablation_facts(out: Path) -> dict[str, str]:
    df = _table(out, "ablation")
    facts = {}
    if df is not None and not df.empty:
        shown = df[(df.method.isin(["zero", "mean"])) & (df.metric == "rank>1")]
        for kind, name in (("cross_attn", "Cross"), ("mlp", "MLP"), ("self_attn", "Self")):
            values = shown[shown.component == kind].value
            if len(values):
                facts[f"Ablate{name}Min"], facts[f"Ablate{name}Max"] = _pct(values.min()), _pct(values.max())
        facts["AblateQueries"] = str(int(df.n_queries.iloc[0])) if "n_queries" in df else ""
    layers = _table(out, "layer_ablation")
    if layers is not None and not layers.empty:
        one = layers[(layers.method != "intact") & (layers.metric == "rank>1")]
        if len(one):
            facts["LayerAblateMax"] = _pct(one.value.max())
    return facts


def _lens_facts(out: Path) -> dict[str, str]:
    df = _table(out, "lens")
    if df is None or df.empty:
        return {}
    facts = {}
    resid = df[(df.facet == "resid_post") & (df.metric == "relevant_rank") & (df.component == "cross_attn")]
    by_layer = resid.groupby("layer").value.median()
    reached = by_layer[by_layer <= 1]
    if len(reached):
        facts["LensFirstRankOneLayer"] = str(int(reached.index.min()))
    share = df[(df.component == "cross_attn") & (df.facet == "out") & (df.metric == "pct_docids_top10")].groupby("layer").value.mean()
    if len(share):
        facts["LensDocidShareMin"], facts["LensDocidShareMax"] = f"{share.min():.0f}", f"{share.max():.0f}"
    return facts


def _circuit_facts(out: Path) -> dict[str, str]:
    df = _table(out, "circuit")
    if df is None or df.empty:
        return {}
    paper = df[(df.circuit == "paper") & (df.metric == "hits@1")]
    values = dict(zip(paper.configuration, paper.value.astype(float)))
    if "intact" not in values or "circuit" not in values:
        return {}
    return {"CircuitIntactHitsOne": _pct(values["intact"]), "CircuitHitsOne": _pct(values["circuit"])}


def _swap_facts(out: Path) -> dict[str, str]:
    facts = {}
    removed = _table(out, "swap_removed_docs")
    if removed is not None and not removed.empty:
        swapped = removed[removed.condition == "A decoder + B encoder"].pivot_table(index="variant", columns="metric", values="value")
        parts = [f"{int(r['hits@1_count'])}/{int(r['n_queries'])}" for _, r in swapped.iterrows()]
        facts["SwapRemovedHits"] = " and ".join(parts)
        alone = removed[removed.condition == "A alone"].pivot_table(index="variant", columns="metric", values="value")
        facts["SwapRemovedDocs"] = " and ".join(str(int(n)) for n in alone["n_documents"]) if "n_documents" in alone else "?"
        facts["SwapRemovedMRR"] = " and ".join(f"{r['mrr']:.2f}" for _, r in swapped.iterrows())
    vanilla = _table(out, "swap_vanilla")
    if vanilla is not None and not vanilla.empty:
        v = vanilla[vanilla.condition == "A decoder + B encoder"].set_index("metric").value
        facts["SwapVanillaMeanRank"], facts["SwapVanillaWithinTen"] = f"{v['mean_rank']:.0f}", _pct(100 * v["hits@10"])
        facts["SwapVanillaQueries"] = f"{int(v['n_queries']):,}"
    return facts


def _patching_facts(patching: dict) -> dict[str, str]:
    facts = {}
    component = (patching.get("component") or {}).get("top") or []
    if component:
        facts["PatchTopComponent"] = component[0]["patch"]
        facts["PatchTopComponentEffect"] = f"{component[0]['normalised_effect']:.2f}"
    head = (patching.get("head") or {}).get("top") or []
    if head:
        facts["PatchTopHead"], facts["PatchTopHeadEffect"] = head[0]["patch"], f"{head[0]['normalised_effect']:.3f}"
    attribution = patching.get("attribution") or {}
    if "spearman" in attribution:
        facts["AtPSpearman"] = f"{attribution['spearman']:.2f}"
    for target in ("component", "head", "attribution"):
        if (patching.get(target) or {}).get("n_pairs"):
            facts["PatchPairs"] = str(patching[target]["n_pairs"])
    return facts


def demo_facts(out: str | Path, metrics: dict, found: dict, patching: dict) -> dict[str, str]:
    """Every number the report and the paper state: macro-style name -> formatted value, from the demo's tables and summaries."""
    out = Path(out)
    return {**_retrieval_facts(metrics), **_stage_facts(found), **_contribution_facts(out), **_ablation_facts(out), **_lens_facts(out),
            **_circuit_facts(out), **_swap_facts(out), **_patching_facts(patching)}


def write_macros(facts: dict[str, str], path: str | Path, prefix: str = "gm") -> Path:
    """`\\newcommand{\\gmRetrievalHitsOne}{0.890}` for every fact (names: letters only, as LaTeX needs)."""
    lines = ["% Written by genir_mech.pipelines (report.py, benchmarks.py) from result tables; do not edit: rerun `make paper`."]
    for name, value in facts.items():
        if not re.fullmatch(r"[A-Za-z]+", name):
            raise ValueError(f"macro name {name!r} must be letters only")
        lines.append(f"\\newcommand{{\\{prefix}{name}}}{{{latex_escape(value)}}}")
    path = Path(path)
    with written_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _rel(path, out: Path) -> str:
    path = Path(path)
    return str(path.relative_to(out)) if path.is_relative_to(out) else str(path)


def _captioned_figure(figures: dict, key: str, out: Path, caption: str) -> list[str]:
    if key not in figures:
        return []
    return [caption, "", f"![{Path(figures[key]).stem}]({_rel(figures[key], out)})", ""]


def _table_md(figures: dict, key: str) -> list[str]:
    """The Markdown display table (its first line is its caption)."""
    if key not in figures:
        return []
    return [Path(figures[key]).read_text().strip(), ""]


def _not_run_lines(not_run: dict[str, str]) -> list[str]:
    """The steps without results and why, so a reader never mistakes a missing section for a finding."""
    if not not_run:
        return []
    return ["Steps without results (their sections below are empty):", "", *[f"- `{k}`: {v}" for k, v in not_run.items()], ""]


def write_report(out: Path, gm, metrics: dict, found: dict, swap: dict, patching: dict, figures: dict, timings: dict, tables: Path | None = None,
                 not_run: dict[str, str] | None = None) -> Path:
    """`<out>/REPORT.md` (findings in sentences, then each figure and table under its caption) and `<out>/numbers.tex`.

    `tables`: the folder holding the model's result tables (default `out`; a sweep passes `<out>/<model>`).
    `not_run`: step -> why it has no results ("skipped: ..." or "failed: ..."), listed near the top and in the time table.
    """
    not_run = not_run or {}
    out = Path(out)
    f = {**model_facts(gm), **demo_facts(tables or out, metrics, found, patching)}
    g = lambda name, default="?": f.get(name, default)  # noqa: E731
    lines = [
        f"# genir_mech demo: {gm.name}",
        "",
        f"Model `{gm.path}`: {gm.n_layers('encoder')} encoder and {gm.n_layers('decoder')} decoder layers, {gm.adapter.n_heads} heads, "
        f"{len(gm.docids)} docids. Every number below is computed from the tables in this folder (also written as LaTeX macros to `numbers.tex`).",
        "",
        *_not_run_lines(not_run),
        "## Retrieval (test split, held-out templates)",
        "",
        f"On {g('RetrievalQueries')} test queries the model ranks the relevant document first for a share of {g('RetrievalHitsOne')} "
        f"(Hits@1), within the top 10 for {g('RetrievalHitsTen')}, with an MRR of {g('RetrievalMRR')}.",
        "",
        *_captioned_figure(figures, "retrieval_retrieval_ranks", out, "Share of queries whose relevant document lies within each rank (log scale)."),
        "## Stages (located automatically)",
        "",
        f"Change-point segmentation of the per-layer profile over {g('StagesQueries')} correct queries finds {g('StagesFound')} stage(s): "
        f"{g('StagesList').replace('--', '-')}; {g('StagesBootstrapAgreement')}% of the bootstrap resamples agree on that number of stages.",
        "",
        "```",
        found.get("report", "").strip() if found else "",
        "```",
        "",
        *_captioned_figure(figures, "stages_stages", out, "Per-layer contribution ratio, cosine with the residual stream and single-layer ablation effect, "
                 "with the located stages shaded and the bootstrap frequency of a boundary before each layer."),
        "## Decoder analyses with the located stages",
        "",
    ]
    if "CrossRatioFirst" in f:
        lines += [f"Cross-attention's contribution ratio goes from {g('CrossRatioFirst')} at layer 0 to {g('CrossRatioLast')} at layer {g('LastLayer')}, "
                  f"the MLPs' from {g('MLPRatioFirst')} to {g('MLPRatioLast')}; the MLPs' cosine with the residual stream goes from "
                  f"{g('MLPCosFirst')} to {g('MLPCosLast')}.", ""]
    lines += _captioned_figure(figures, "decoder_fig3", out, "Fig. 3: each component's share of its layer's update (top) and its cosine with the residual stream (bottom).")
    if "LensDocidShareMin" in f:
        lines += [("The relevant docid reaches median rank 1 in the residual stream after layer "
                   f"{g('LensFirstRankOneLayer')}'s cross-attention. " if "LensFirstRankOneLayer" in f else "")
                  + f"{g('LensDocidShareMin')}-{g('LensDocidShareMax')}% of each layer's cross-attention top-10 tokens are docids.", ""]
    lines += _captioned_figure(figures, "decoder_fig4", out, "Fig. 4: logit lens. Rank of the relevant docid, docid and other tokens in the residual stream (left) and in each component's output (right).")
    lines += _table_md(figures, "decoder_table5")
    if "AblateCrossMin" in f:
        lines += [f"Zeroing or mean-ablating cross-attention in a whole stage sends {g('AblateCrossMin')}-{g('AblateCrossMax')}% of the "
                  f"{g('AblateQueries')} correct queries off rank 1; the MLPs {g('AblateMLPMin', '-')}-{g('AblateMLPMax', '-')}%, self-attention "
                  f"{g('AblateSelfMin', '-')}-{g('AblateSelfMax', '-')}%. No single layer's component moves more than {g('LayerAblateMax')}%.", ""]
    lines += _captioned_figure(figures, "decoder_ablation", out, "Stage ablations: % of correct queries whose relevant document leaves rank 1.")
    lines += _table_md(figures, "decoder_table3")
    lines += _captioned_figure(figures, "decoder_layer_ablation", out, "Single-layer ablations: % of correct queries whose relevant document leaves rank 1.")
    if "CircuitHitsOne" in f:
        lines += [f"The paper's minimal circuit keeps Hits@1 at {g('CircuitHitsOne')}% against {g('CircuitIntactHitsOne')}% for the intact model.", ""]
    lines += _captioned_figure(figures, "decoder_circuit", out, "Minimal circuit: Hits@k of the intact model and of the circuit.")
    lines += _table_md(figures, "decoder_table4")
    lines += _captioned_figure(figures, "decoder_fig5", out, "Fig. 5: what the MLP neurons and cross-attention heads of each stage read (share of units whose top source is each earlier component).")
    lines += ["## Encoder swap", ""]
    if "SwapRemovedHits" in f:
        lines += [f"A's decoder on the encoder output of a variant trained without {g('SwapRemovedDocs')} documents ranks {g('SwapRemovedHits')} of those documents' "
                  f"queries first (MRR {g('SwapRemovedMRR')}).", ""]
    if "SwapVanillaMeanRank" in f:
        lines += [f"On the vanilla pretrained encoder's output, A's decoder puts the relevant document at mean rank {g('SwapVanillaMeanRank')} "
                  f"over {g('SwapVanillaQueries')} queries, within rank 10 for {g('SwapVanillaWithinTen')}%.", ""]
    lines += _captioned_figure(figures, "swap_swap", out, "Encoder swap: Hits@1 per condition on the removed documents (left) and rank distribution with the vanilla encoder (right).")
    lines += _table_md(figures, "swap_table2_swap_removed_docs") + _table_md(figures, "swap_table2_swap_vanilla")
    lines += ["## Patching", ""]
    if "PatchTopComponent" in f:
        lines += [f"Over {g('PatchPairs')} clean/corrupted pairs, patching `{g('PatchTopComponent')}` from the clean run restores the largest share of "
                  f"the logit difference among decoder components ({g('PatchTopComponentEffect')})"
                  + (f"; the largest single head is `{g('PatchTopHead')}` ({g('PatchTopHeadEffect')})." if "PatchTopHead" in f else "."), ""]
    lines += _captioned_figure(figures, "component_component", out, "Activation patching of each decoder component: restored share of the logit difference.")
    lines += _captioned_figure(figures, "head_head", out, "Activation patching of each attention head: restored share of the logit difference.")
    if "AtPSpearman" in f:
        lines += [f"Attribution patching (AtP*) ranks its top candidates like exact patching does: Spearman {g('AtPSpearman')}.", ""]
    for family, caption in (("heads", "AtP* estimate per attention head."), ("components", "AtP* estimate per decoder component."),
                            ("encoder_positions", "AtP* estimate per encoder output position (labelled with the most common token there)."),
                            ("encoder_layer_positions", "AtP* estimate per encoder layer and position."), ("resid", "AtP* estimate per decoder residual stream.")):
        lines += _captioned_figure(figures, f"attribution_attribution_{family}", out, caption)
    lines += ["## Time per step", "", "| step | seconds | result |", "| --- | ---: | --- |"]
    lines += [f"| {k} | {v} | {not_run[k].split(':', 1)[0] if k in not_run else 'done'} |" for k, v in timings.items()]
    path = out / "REPORT.md"
    with written_atomically(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_macros(f, out / "numbers.tex")
    return path
