"""Contribution ratio and residual cosines of every decoder component over the model's correct queries (paper Fig. 3).

    from genir_mech.pipelines.contributions import ContributionsConfig, run_contributions
    summary = run_contributions(gm, dataset, "runs/contributions/dsi-synth", ContributionsConfig(max_queries=256, stages="stages.json"))
    summary["mean_ratio"]["cross_attn"], summary["figures"]["fig3"]

Writes contributions.csv and figures/fig3_contributions.png. The stages are
optional here: their first stage's MLPs give the cos_priming metric and the
figure's shaded bands; without them there is neither (and no warning).
`steps`: at decoding steps of a multi-token docid (pipelines.steps), with a
`step` column.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..analyses.contributions import contributions
from ..retrieval.steps import resolve_steps
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw
from .steps import per_step


@dataclass
class ContributionsConfig(QueryConfig):
    """Parameters of `run_contributions`, each with its default; recorded in every table's provenance."""
    stages: StageDefinition | str | Path | None = None
    encoder: bool = False  # also measure the encoder layers (averaged over each query's tokens)
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


@atomic
def run_contributions(model, data, out, config: ContributionsConfig | None = None, *, progress: bool = True) -> dict:
    """Contribution ratio and residual cosines of every decoder component over the model's correct queries (paper Fig. 3); returns a JSON-able summary (module docstring: what it writes).

        summary = run_contributions(gm, dataset, "runs/contributions/dsi-synth", ContributionsConfig(max_queries=256, stages="stages.json"))
    """
    config = config or ContributionsConfig()
    if config.steps is not None:
        resolve_steps(model, config.steps)  # a step beyond the docid length: one line, before the queries are ranked
    return contributions_on(Inputs.for_queries(model, data, out, config), config, progress=progress)


def contributions_on(inputs: Inputs, config: ContributionsConfig, *, progress: bool = True) -> dict:
    """The pipeline on already chosen queries (the decoder-analyses pipeline shares one Inputs)."""
    gm = inputs.model
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"), fallback=False)
    sides = ("encoder", "decoder") if config.encoder else ("decoder",)
    if config.steps is None:
        df = contributions(gm, inputs.texts, inputs.query_ids, stages, config.batch_size, sides, progress=progress)
    else:
        df = per_step(inputs, resolve_steps(gm, config.steps), lambda texts, qids, docs, view: {
            "contributions": contributions(gm, texts, qids, stages, config.batch_size, sides, progress=progress, view=view)})["contributions"]
    path = inputs.write(df, "contributions", {**config_record(config), "stages": stages.to_json() if stages else None, "sides": list(sides)})
    ratio = df[(df.side == "decoder") & (df.metric == "ratio")]
    means = ratio.groupby(["component", "layer"]).value.mean()  # over every step measured
    by_layer = {k: means.xs(k).round(4).tolist() for k in gm.adapter.kinds("decoder")}
    if "step" in df.columns:  # one row of the printed table per component and step
        step_means = ratio.groupby(["component", "step", "layer"]).value.mean()
        by_layer = {f"{k} (step {t})": step_means.xs((k, t)).round(4).tolist() for k in gm.adapter.kinds("decoder") for t in sorted(ratio.step.unique())}
    return {
        "table": str(path),
        "n_queries": len(inputs.queries),
        "mean_ratio": {k: float(means.xs(k).mean()) for k in gm.adapter.kinds("decoder")},
        "mean_ratio_by_layer": by_layer,
        "figures": draw({"contributions": df}, inputs.out, stages, gm.name),
    }
