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
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..analyses.ablation import ablate, layer_ablation
from ..analyses.change_point import DEFAULT_PENALTY, DEFAULT_RESOLUTION
from ..analyses.contributions import contributions
from ..analyses.stage_localisation import ABLATION_METRIC, NamingRules, localise_stages
from ..stage_definition import Stage, StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw


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


def _stage_cost(gm, texts, docs, batch_size, progress):
    """Fraction of queries leaving rank 1 when each span's MLPs are mean-ablated together (paper Table 3 protocol)."""

    def cost(spans):
        spans_def = StageDefinition(tuple(Stage(f"s{i}", tuple(range(a, b + 1))) for i, (a, b) in enumerate(spans)))
        df = ablate(gm, texts, docs, spans_def, kinds=("mlp",), methods=("mean",), batch_size=batch_size, progress=progress)
        df = df[(df["metric"] == ABLATION_METRIC) & (df["method"] == "mean")].set_index("stage")["value"]
        return [float(df[f"s{i}"]) / 100.0 for i in range(len(spans))]

    return cost


@atomic
def run_stages(model, data, out, config: StagesConfig | None = None, *, progress: bool = True) -> dict:
    """Stage localisation: find the decoder's stages of a checkpoint and save them as a stage definition; returns a JSON-able summary (module docstring: what it writes).

        summary = run_stages(gm, dataset, "runs/stages/dsi-synth", StagesConfig(max_queries=256, bootstrap=200))
    """
    config = config or StagesConfig()
    inputs = Inputs.for_queries(model, data, out, config, at_least=2)
    gm, texts, docs = model, inputs.texts, inputs.relevant_docs
    contrib = contributions(gm, texts, inputs.query_ids, batch_size=config.batch_size, progress=progress)
    layers = layer_ablation(gm, texts, docs, gm.adapter.kinds("decoder"), ("mean",), batch_size=config.batch_size, progress=progress) if config.ablation else None
    found = localise_stages(
        contrib,
        layers,
        _stage_cost(gm, texts, docs, config.batch_size, progress) if config.ablation else None,
        min_stage_size=config.min_stage_size,
        max_stages=config.max_stages,
        bootstrap=config.bootstrap,
        seed=config.seed,
        penalty=config.penalty,
        resolution=config.resolution,
        rules=config.rules,
    )
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
