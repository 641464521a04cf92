"""Zero / mean / cross-model ablation of component types per stage (paper Table 3), and optionally per single layer.

    from genir_mech.pipelines.ablate import AblateConfig, run_ablate
    summary = run_ablate(gm, dataset, "runs/ablate/dsi-synth", AblateConfig(stages="stages.json", methods=("zero", "mean", "cross-model")), other=base_gm)
    summary["pct_left_rank1"]["bridging/cross_attn"]["mean"], summary["figures"]["ablation"]

Writes ablation.csv (and layer_ablation.csv with `per_layer`), bar charts of
the queries whose relevant document leaves rank 1 (figures/ablation.png,
figures/layer_ablation.png) and Table 3. Cross-model ablation replaces this
model's component outputs by `other`'s (same tokenizer and width).
`steps`: at decoding steps of a multi-token docid (pipelines.steps): ranks of
the correct next docid token, means at the step, a `step` column.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..analyses.ablation import ablate, layer_ablation
from ..errors import GenIRError
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from ..retrieval.steps import require_steps, resolve_steps
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw
from .steps import per_step


@dataclass
class AblateConfig(QueryConfig):
    """Parameters of `run_ablate`, each with its default; recorded in every table's provenance."""
    stages: StageDefinition | str | Path | None = None  # None: even thirds, with a warning
    kinds: Sequence[str] | None = None  # component types; None: every decoder kind of the model
    methods: Sequence[str] = ("zero", "mean")
    per_layer: bool = False
    rows_per_forward: int | None = None  # fixed rows per forward pass; None: as many as the memory budget holds (--max-memory)
    steps: int | list[int] | str | None = None  # decoding step(s) of a multi-token docid, or "all"; None: the ranking step, no step column


@atomic
def run_ablate(model, data, out, config: AblateConfig | None = None, *, other=None, progress: bool = True) -> dict:
    """Zero / mean / cross-model ablation of component types per stage (paper Table 3), and optionally per single layer; returns a JSON-able summary (module docstring: what it writes).

        summary = run_ablate(gm, dataset, "runs/ablate/dsi-synth", AblateConfig(stages="stages.json", methods=("zero", "mean", "cross-model")), other=base_gm)
    """
    config = config or AblateConfig()
    require_steps(model, config.steps, "ablation")
    if config.steps is not None:
        resolve_steps(model, config.steps)  # a step beyond the docid length: one line, before the queries are ranked
    return ablate_on(Inputs.for_queries(model, data, out, config), config, other=other, progress=progress)


def ablate_on(inputs: Inputs, config: AblateConfig, *, other=None, progress: bool = True) -> dict:
    gm = inputs.model
    if "cross-model" in config.methods and other is None:
        raise GenIRError("cross-model ablation needs the other model: pass other=load_genir(...) (CLI: --other CHECKPOINT)")
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"))
    kinds = tuple(config.kinds or gm.adapter.kinds("decoder"))
    common = dict(other=other, batch_size=config.batch_size, rows_per_forward=config.rows_per_forward, progress=progress)
    record = {**config_record(config), "stages": stages.to_json(), "kinds": list(kinds), "methods": list(config.methods), "other": getattr(other, "path", None)}


    def measure(texts, qids, docs, view=None):
        found = {"ablation": ablate(gm, texts, docs, stages, kinds, tuple(config.methods), **common, view=view)}
        if config.per_layer:
            # positional kinds/methods: the per-layer call takes the same arguments as the per-stage one
            found["layer_ablation"] = layer_ablation(gm, texts, docs, kinds, tuple(config.methods), **common, view=view)
        return found

    if config.steps is None:
        frames = measure(inputs.texts, inputs.query_ids, inputs.relevant_docs)
    else:
        frames = per_step(inputs, resolve_steps(gm, config.steps), measure)
    df = frames["ablation"]
    summary = {"table": str(inputs.write(df, "ablation", record)), "n_queries": len(inputs.queries), "stages": stages.to_json()["stages"]}
    if config.per_layer:
        summary["per_layer_table"] = str(inputs.write(frames["layer_ablation"], "layer_ablation", record))
    by = ["step"] if "step" in df.columns else []
    left = df[(df.metric == "rank>1") & (df.method != "intact")].pivot_table(index=[*by, "stage", "component"], columns="method", values="value", sort=False)
    summary["pct_left_rank1"] = {"/".join(map(str, key)): {m: round(float(v), 2) for m, v in row.items()} for key, row in left.iterrows()}
    summary["figures"] = draw(frames, inputs.out, stages, gm.name)
    return summary
