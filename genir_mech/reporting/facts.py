"""Every number the demo's REPORT.md and paper/main.tex state, read from one model's results in a finished sweep.

    facts = demo_facts(SweepResults.of(manifest, "dsi"))     # {"RetrievalHitsOne": "0.890", "StagesFound": "1", ...}
    facts = {**model_facts(shape), **facts}                  # + layers, heads and docids of the model

Names are LaTeX macro names without their prefix (write_macros makes
`\\gmRetrievalHitsOne` of `RetrievalHitsOne`): the paper `\\input`s them and
never types a number in. Each number comes from the summary a unit recorded
(retrieval metrics, located stages, patching) or from a table in the folder of
the experiment that wrote it (reporting.results); a number whose experiment did
not run is left out, and the report and the paper say so.
"""
from __future__ import annotations

from .results import SweepResults


def _pct(x: float) -> str:
    return f"{x:.1f}"


def model_facts(model) -> dict[str, str]:
    """The model's shape: layers per side, heads, docids (`model`: a GenIRModel, or report.model_description's stand-in)."""
    return {"ModelEncoderLayers": str(model.n_layers("encoder")) if "encoder" in model.adapter.sides else "0",
            "ModelDecoderLayers": str(model.n_layers("decoder")), "ModelHeads": str(model.adapter.n_heads), "ModelDocids": f"{len(model.docids):,}"}


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


def _contribution_facts(results: SweepResults) -> dict[str, str]:
    df = results.table("contributions", "contributions")
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


def _ablation_facts(results: SweepResults) -> dict[str, str]:
    df = results.table("ablate", "ablation")
    facts = {}
    if df is not None and not df.empty:
        shown = df[(df.method.isin(["zero", "mean"])) & (df.metric == "rank>1")]
        for kind, name in (("cross_attn", "Cross"), ("mlp", "MLP"), ("self_attn", "Self")):
            values = shown[shown.component == kind].value
            if len(values):
                facts[f"Ablate{name}Min"], facts[f"Ablate{name}Max"] = _pct(values.min()), _pct(values.max())
        facts["AblateQueries"] = str(int(df.n_queries.iloc[0])) if "n_queries" in df else ""
    layers = results.table("ablate", "layer_ablation")
    if layers is not None and not layers.empty:
        one = layers[(layers.method != "intact") & (layers.metric == "rank>1")]
        if len(one):
            facts["LayerAblateMax"] = _pct(one.value.max())
    return facts


def _lens_facts(results: SweepResults) -> dict[str, str]:
    df = results.table("lens", "lens")
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


def _circuit_facts(results: SweepResults) -> dict[str, str]:
    df = results.table("circuit", "circuit")
    if df is None or df.empty:
        return {}
    paper = df[(df.circuit == "paper") & (df.metric == "hits@1")]
    values = dict(zip(paper.configuration, paper.value.astype(float)))
    if "intact" not in values or "circuit" not in values:
        return {}
    return {"CircuitIntactHitsOne": _pct(values["intact"]), "CircuitHitsOne": _pct(values["circuit"])}


def _swap_facts(results: SweepResults) -> dict[str, str]:
    facts = {}
    removed = results.table("swap", "swap_removed_docs")
    if removed is not None and not removed.empty:
        swapped = removed[removed.condition == "A decoder + B encoder"].pivot_table(index="variant", columns="metric", values="value")
        parts = [f"{int(r['hits@1_count'])}/{int(r['n_queries'])}" for _, r in swapped.iterrows()]
        facts["SwapRemovedHits"] = " and ".join(parts)
        alone = removed[removed.condition == "A alone"].pivot_table(index="variant", columns="metric", values="value")
        facts["SwapRemovedDocs"] = " and ".join(str(int(n)) for n in alone["n_documents"]) if "n_documents" in alone else "?"
        facts["SwapRemovedMRR"] = " and ".join(f"{r['mrr']:.2f}" for _, r in swapped.iterrows())
    vanilla = results.table("swap", "swap_vanilla")
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


def demo_facts(results: SweepResults) -> dict[str, str]:
    """Every number the report and the paper state: macro-style name -> formatted value, from the units' summaries and tables."""
    metrics = {k: v for k, v in results.summary("eval").items() if k not in ("figures", "correct_queries")}
    patching = {**results.patching(), "attribution": results.summary("attribute")}
    return {**_retrieval_facts(metrics), **_stage_facts(results.summary("stages")), **_contribution_facts(results), **_ablation_facts(results),
            **_lens_facts(results), **_circuit_facts(results), **_swap_facts(results), **_patching_facts(patching)}
