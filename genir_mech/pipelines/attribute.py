"""Attribution patching (AtP, and AtP* with the QK fix) for every node, optionally verified by exact patching.

    from genir_mech.pipelines.attribute import AttributeConfig, run_attribute
    summary = run_attribute(gm, dataset, "runs/attribute/dsi-synth", AttributeConfig(n_pairs=64, verify_top_k=20))
    summary["spearman"], summary["top"], summary["figures"]["attribution_heads"]

`data` and pair selection as in pipelines.patch. Writes per-pair estimates,
bootstrap summaries, one heatmap per node family (decoder resid, components,
heads, encoder positions) and, with `verify_top_k`, the exact effects of the
top-k nodes and Spearman's rho between estimate and exact effect.

`steps`: at decoding steps of a multi-token docid, on the pairs each step
decides (as in pipelines.patch); tables get a `step` column, figures a
`_step<t>` suffix. After step 0 the decoder attends over its own prefix, so
the QK fix (which recomputes cross-attention only) leaves decoder
self-attention linearised.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import GenIRError
from ..patching.aggregation import aggregate
from ..patching.attribution import METHODS, attribute, verify_top_k
from ..results_directory import atomic
from ..retrieval.steps import require_steps, resolve_steps
from .inputs import Inputs, PairConfig, config_record, position_token_table
from .patch import node_label
from .rendering import attribution_method, draw_attribution_summary, patching_context, position_tokens


@dataclass
class AttributeConfig(PairConfig):
    """Parameters of `run_attribute`, each with its default; recorded in every table's provenance."""
    direction: str = "denoise"
    qk_fix: bool = True  # AtP* (the QK fix) as well as plain AtP
    verify_top_k: int = 0  # exactly patch the K nodes with the largest mean |estimate|
    verify_method: str | None = None  # which estimate to verify (default atp_qk, or atp without the QK fix)
    rows_per_forward: int | None = None  # fixed rows per forward pass; None: as many as the memory budget holds (--max-memory)
    pairs_per_batch: int = 64
    n_boot: int = 1000
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


def top_estimates(summary: pd.DataFrame, method: str, n: int = 8) -> list[dict]:
    """The `n` nodes with the largest mean |estimate| of `method`."""
    shown = summary[(summary.method == method) & (summary.quantity == "estimate")]
    top = shown.reindex(shown["mean"].dropna().abs().sort_values(ascending=False).index).head(n)
    return [{"node": node_label(r), "estimate": round(float(r.mean), 4), "ci": [round(float(r.ci_low), 4), round(float(r.ci_high), 4)]} for r in top.itertuples()]


@atomic
def run_attribute(model, data, out, config: AttributeConfig | None = None, *, progress: bool = True) -> dict:
    """Attribution patching (AtP, and AtP* with the QK fix) for every node, optionally verified by exact patching; returns a JSON-able summary (module docstring: what it writes).

        summary = run_attribute(gm, dataset, "runs/attribute/dsi-synth", AttributeConfig(n_pairs=64, verify_top_k=20))
    """
    config = config or AttributeConfig()
    require_steps(model, config.steps, "attribution patching")
    steps = None if config.steps is None else resolve_steps(model, config.steps)  # a step too far: one line, before any work
    method = attribution_method({"verify_method": config.verify_method, "qk_fix": config.qk_fix})
    if method not in METHODS:
        raise GenIRError(f"unknown verify_method {method!r}; methods are {', '.join(METHODS)}")
    if config.steps is not None:
        return _run_steps(model, data, out, config, method, steps, progress)
    inputs = Inputs.for_pairs(model, data, out, config)
    record = {**config_record(config), "metric": "logit_diff"}
    table, summary, result, check = _attribute(inputs, config, method, progress)
    result["per_pair"] = str(inputs.write(table, "attribution_per_pair", record))
    result["summary"] = str(inputs.write(summary, "attribution_summary", record))
    if check is not None:
        name = f"verify_top{config.verify_top_k}_{method}"
        result["verification"] = str(inputs.write(check, name, {**record, "k": config.verify_top_k, "method": method}, spearman=result["spearman"]))
    return result


def _attribute(inputs: Inputs, config: AttributeConfig, method: str, progress: bool, prefix: str = "attribution", context_note: str = ""):
    """Estimates, summary, the JSON-able result (figures, top nodes, Spearman's rho) and the verification table of one set of pairs."""
    gm, batch = inputs.model, inputs.pairs
    table = attribute(gm, batch, direction=config.direction, qk_fix=config.qk_fix, pairs_per_batch=config.pairs_per_batch, progress=progress)
    summary = pd.concat([aggregate(table, value=v, n_boot=config.n_boot, seed=config.seed) for v in ("estimate", "normalised")], ignore_index=True)
    figures = draw_attribution_summary(summary, method, inputs.out, patching_context(gm.name + context_note, config.direction, len(batch)),
                                       position_tokens(position_token_table(batch)), prefix)
    result = {
        "n_pairs": len(batch), "direction": config.direction, "method": method,
        "n_nodes": int(table.groupby(["site", "head", "position"], dropna=False).ngroups), "pairs": inputs.pair_counts(),
        "top": top_estimates(summary, method),
        "figures": figures,
    }
    check = None
    if config.verify_top_k:
        check, rho = verify_top_k(gm, batch, table, config.verify_top_k, method=method, rows_per_forward=config.rows_per_forward,
                                  pairs_per_batch=config.pairs_per_batch, progress=progress)
        result["spearman"] = rho
    return table, summary, result, check


def _run_steps(model, data, out, config: AttributeConfig, method: str, steps: list[int], progress: bool) -> dict:
    """Attribution at every decoding step in `steps`, each on the pairs that step decides (pipelines.patch); `step` columns."""
    frames: dict[str, list] = {"pairs": [], "attribution_per_pair": [], "attribution_summary": [], f"verify_top{config.verify_top_k}_{method}": []}
    per_step, figures, inputs = {}, {}, None
    for step in steps:
        inputs = Inputs.for_pairs(model, data, out, config, step=step, write=False)
        table, summary, result, check = _attribute(inputs, config, method, progress, f"attribution_step{step}", f", docid step {step}")
        figures.update(result["figures"])
        for name, df in (("pairs", inputs.pairs_table), ("attribution_per_pair", table), ("attribution_summary", summary),
                         (f"verify_top{config.verify_top_k}_{method}", check)):
            if df is not None:
                frames[name].append(df if "step" in df.columns else df.assign(step=step)[["step", *df.columns]])
        per_step[step] = {k: result[k] for k in ("n_pairs", "n_nodes", "pairs", "top") + (("spearman",) if "spearman" in result else ())}
    record = {**config_record(config), "metric": "logit_diff", "steps": steps}
    written = {name: str(inputs.write(pd.concat(parts, ignore_index=True), name, record)) for name, parts in frames.items() if parts}
    return {"per_pair": written["attribution_per_pair"], "summary": written["attribution_summary"], "direction": config.direction, "method": method,
            "steps": per_step, "figures": figures, "top": [dict(t, step=step) for step, s in per_step.items() for t in s["top"]],
            "pairs": {k: sum(s["pairs"][k] for s in per_step.values()) for k in ("n_candidates", "n_kept", "n_used")}}
