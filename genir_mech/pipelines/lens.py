"""Logit lens of the decoder: rank of the relevant docid after every sublayer, in every component's output and head (paper Fig. 4, Tables 5-6).

    from genir_mech.pipelines.lens import LensConfig, run_lens
    summary = run_lens(gm, dataset, "runs/lens/dsi-synth", LensConfig(max_queries=256, top_k=10, examples=32))
    summary["median_relevant_rank_by_layer"], summary["figures"]["fig4"]

Writes lens.csv (ranks), lens_heads.csv (decoded top tokens per
cross-attention head for the first `examples` queries), figures/fig4_logit_lens.png
and tables 5-6. Stages, when given, only shade the figure and group the tables.
`steps`: at decoding steps of a multi-token docid (pipelines.steps): the rank of
the correct next docid token among the trie-valid continuations and in the
vocabulary, with a `step` column.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..analyses.logit_lens import LensResult, docid_share_by_layer, logit_lens
from ..retrieval.steps import require_steps, resolve_steps
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw
from .steps import per_step


@dataclass
class LensConfig(QueryConfig):
    """Parameters of `run_lens`, each with its default; recorded in every table's provenance."""
    top_k: int = 10  # decoded top tokens kept per cross-attention head
    examples: int = 32  # queries whose head top tokens are kept
    stages: StageDefinition | str | Path | None = None
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


@atomic
def run_lens(model, data, out, config: LensConfig | None = None, *, progress: bool = True) -> dict:
    """Logit lens of the decoder: rank of the relevant docid after every sublayer, in every component's output and head (paper Fig. 4, Tables 5-6); returns a JSON-able summary (module docstring: what it writes).

        summary = run_lens(gm, dataset, "runs/lens/dsi-synth", LensConfig(max_queries=256, top_k=10, examples=32))
    """
    config = config or LensConfig()
    require_steps(model, config.steps, "the logit lens")
    if config.steps is not None:
        resolve_steps(model, config.steps)  # a step beyond the docid length: one line, before the queries are ranked
    return lens_on(Inputs.for_queries(model, data, out, config), config, progress=progress)


def lens_on(inputs: Inputs, config: LensConfig, *, progress: bool = True) -> dict:
    gm = inputs.model
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"), fallback=False)
    if config.steps is None:
        lens = logit_lens(gm, inputs.texts, inputs.query_ids, inputs.relevant_docs, config.batch_size, config.top_k, config.examples, progress=progress)
    else:
        def measure(texts, qids, docs, view):
            found = logit_lens(gm, texts, qids, docs, config.batch_size, config.top_k, config.examples, progress=progress, view=view)
            return {"lens": found.ranks, "lens_heads": found.head_tokens}
        frames = per_step(inputs, resolve_steps(gm, config.steps), measure)
        lens = LensResult(frames["lens"], frames["lens_heads"])
    record = {**config_record(config), "stages": stages.to_json() if stages else None}
    path = inputs.write(lens.ranks, "lens", record)
    heads = inputs.write(lens.head_tokens, "lens_heads", record)
    r = lens.ranks
    by = ["step", "layer"] if "step" in r.columns else ["layer"]
    resid = r[(r.facet == "resid_post") & (r.component == "mlp") & (r.metric == "relevant_rank")].groupby(by).value.median()
    share = docid_share_by_layer(r).pivot(index="layer", columns="metric", values="value")
    return {
        "table": str(path),
        "head_tokens": str(heads),
        "n_queries": len(inputs.queries),
        "median_relevant_rank_by_layer": {(int(k) if len(by) == 1 else f"step {k[0]} layer {k[1]}"): float(v) for k, v in resid.round(1).items()},
        "docid_share_by_layer": {str(c): {int(k): round(float(v), 2) for k, v in share[c].items()} for c in share.columns},
        "figures": draw({"lens": lens.ranks, "lens_heads": lens.head_tokens}, inputs.out, stages, gm.name),
    }
