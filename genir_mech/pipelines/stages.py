"""Stage localisation: find the decoder's stages of a checkpoint and save them as a stage definition.

    from genir_mech.pipelines.stages import StagesConfig, run_stages
    summary = run_stages(gm, dataset, "runs/stages/dsi-synth", StagesConfig(max_queries=256, bootstrap=200))
    StageDefinition.load(summary["stage_definition"])       # what ablate / circuit / read take as `stages`

Measures contributions and single-layer mean ablations over the model's
correct queries, segments the layers (analyses.stage_localisation), checks each
MLP stage by mean-ablating its MLPs together, and writes the tables,
`stages.json` and figures/stages.png (the profile with the stages and their
boundary stability), plus Fig. 3 and the per-layer ablation figure of the
measurements it segmented.

`steps` (a decoding step, a list of them or "all") localises the stages of
each step of a multi-token docid separately (retrieval.steps: the decoder
teacher-forced to the step's prefix, ranks among the trie-valid
continuations): every table gets a `step` column, `step_stages` lists the
stages found per step, `stages_step<t>.json` holds each step's definition
(and `stages.json` the first measured step's), and figures/stages_per_step.png draws the
contribution profile and the located stages of every step side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from ..analyses.ablation import ablate, layer_ablation
from ..analyses.change_point import DEFAULT_PENALTY, DEFAULT_RESOLUTION
from ..analyses.contributions import contributions
from ..analyses.stage_localisation import ABLATION_METRIC, NamingRules, localise_stages
from ..retrieval.steps import require_steps, resolve_steps
from ..stage_definition import Stage, StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw
from .steps import per_step


@dataclass
class StagesConfig(QueryConfig):
    """Parameters of `run_stages`, each with its default; recorded in every table's provenance."""
    bootstrap: int = 200  # resamples of the queries for boundary stability
    min_stage_size: int | None = None  # default max(1, n_layers // 8)
    max_stages: int | None = None  # default n_layers // min_stage_size
    penalty: float = DEFAULT_PENALTY  # multiplier of the BIC penalty; larger gives fewer stages
    resolution: float = DEFAULT_RESOLUTION  # feature differences below this are noise
    rules: NamingRules = field(default_factory=NamingRules)
    ablation: bool = True  # False: segment on contributions alone (MLP stages then cannot be confirmed as priming)
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


def _stage_cost(gm, texts, docs, batch_size, progress, view=None):
    """Fraction of queries leaving rank 1 when each span's MLPs are mean-ablated together (paper Table 3 protocol)."""

    def cost(spans):
        spans_def = StageDefinition(tuple(Stage(f"s{i}", tuple(range(a, b + 1))) for i, (a, b) in enumerate(spans)))
        df = ablate(gm, texts, docs, spans_def, kinds=("mlp",), methods=("mean",), batch_size=batch_size, progress=progress, view=view)
        df = df[(df["metric"] == ABLATION_METRIC) & (df["method"] == "mean")].set_index("stage")["value"]
        return [float(df[f"s{i}"]) / 100.0 for i in range(len(spans))]

    return cost


@atomic
def run_stages(model, data, out, config: StagesConfig | None = None, *, progress: bool = True) -> dict:
    """Stage localisation: find the decoder's stages of a checkpoint and save them as a stage definition; returns a JSON-able summary (module docstring: what it writes).

        summary = run_stages(gm, dataset, "runs/stages/dsi-synth", StagesConfig(max_queries=256, bootstrap=200))
    """
    config = config or StagesConfig()
    require_steps(model, config.steps, "stage localisation")
    steps = None if config.steps is None else resolve_steps(model, config.steps)  # a step beyond the docid length: one line, before any work
    inputs = Inputs.for_queries(model, data, out, config, at_least=2)
    if steps is not None:
        return _run_steps(inputs, config, steps, progress)
    gm, texts, docs = model, inputs.texts, inputs.relevant_docs
    contrib, layers, found = _localise(gm, texts, inputs.query_ids, docs, config, progress)
    record, stages = {**config_record(config), "rules": vars(config.rules)}, found.definition.to_json()
    frames = {"contributions": contrib, "stage_layer_means": found.layer_means, "boundary_stability": found.stability}
    for name, df in (*frames.items(), ("stage_features", found.profile), ("stage_evidence", found.evidence), ("n_stages_bootstrap", found.n_stages_distribution)):
        inputs.write(df, name, record, stages=stages)
    if layers is not None:
        frames["layer_ablation"] = layers
        inputs.write(layers, "layer_ablation", record, stages=stages)
    definition = found.definition.save(inputs.out / "stages.json")
    return {
        "stages": stages["stages"],
        "boundary_stability": found.boundary_stability(),
        "n_stages_bootstrap": dict(zip(found.n_stages_distribution["n_stages"].astype(int).tolist(), found.n_stages_distribution["frequency"].tolist())),
        "matches_paper": found.matches_paper,
        "n_queries": found.n_queries,
        "stage_definition": str(definition),
        "report": found.summary(),
        "figures": draw(frames, inputs.out, found.definition, gm.name),
    }


def _localise(gm, texts, query_ids, docs, config: StagesConfig, progress: bool, view=None):
    """Contributions, single-layer mean ablations and the segmentation of one set of queries (at one decoding step with `view`)."""
    contrib = contributions(gm, texts, query_ids, batch_size=config.batch_size, progress=progress, view=view)
    layers = layer_ablation(gm, texts, docs, gm.adapter.kinds("decoder"), ("mean",), batch_size=config.batch_size, progress=progress, view=view) if config.ablation else None
    found = localise_stages(
        contrib,
        layers,
        _stage_cost(gm, texts, docs, config.batch_size, progress, view) if config.ablation else None,
        min_stage_size=config.min_stage_size,
        max_stages=config.max_stages,
        bootstrap=config.bootstrap,
        seed=config.seed,
        penalty=config.penalty,
        resolution=config.resolution,
        rules=config.rules,
    )
    return contrib, layers, found


def _run_steps(inputs: Inputs, config: StagesConfig, steps: list[int], progress: bool) -> dict:
    """The localisation at every decoding step in `steps`: tables with a step column, one definition per step, the per-step figure."""
    gm = inputs.model
    found_at, reports = {}, []

    def measure(texts, query_ids, docs, view):
        contrib, layers, found = _localise(gm, texts, query_ids, docs, config, progress, view)
        path = found.definition.save(inputs.out / f"stages_step{view.step}.json")
        if not found_at:  # the first step measured
            found.definition.save(inputs.out / "stages.json")
        found_at[view.step] = {"stages": found.definition.to_json()["stages"], "boundary_stability": found.boundary_stability(),
                               "n_queries": found.n_queries, "stage_definition": str(path)}
        reports.append(f"step {view.step}: " + found.summary())
        tables = {"contributions": contrib, "stage_layer_means": found.layer_means, "boundary_stability": found.stability,
                  "stage_features": found.profile, "stage_evidence": found.evidence, "n_stages_bootstrap": found.n_stages_distribution,
                  "step_stages": stage_rows(found.definition)}
        return tables if layers is None else {**tables, "layer_ablation": layers}

    frames = per_step(inputs, steps, measure)
    record = {**config_record(config), "rules": vars(config.rules), "steps": steps}
    for name, df in frames.items():
        inputs.write(df, name, record)
    return {
        "steps": found_at,
        "report": "\n".join(reports),
        "stage_definition": str(inputs.out / "stages.json"),
        "figures": draw(frames, inputs.out, StageDefinition.load(inputs.out / "stages.json"), gm.name),
    }


def stage_rows(definition: StageDefinition) -> pd.DataFrame:
    """One row per stage: stage, first_layer, last_layer (the per-step figure reads the located stages from here)."""
    return pd.DataFrame([{"stage": s.name, "first_layer": min(s.layers), "last_layer": max(s.layers)} for s in definition.stages if s.layers],
                        columns=["stage", "first_layer", "last_layer"])

