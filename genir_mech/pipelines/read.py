"""Component reading: which earlier components the decoder's MLP neurons and cross-attention heads read from (paper Fig. 5).

    from genir_mech.pipelines.read import ReadConfig, run_read
    summary = run_read(gm, dataset, "runs/read/dsi-synth", ReadConfig(stages="stages.json", max_queries=256))
    summary["main_source"]["bridging/cross_attn"], summary["figures"]["fig5"]

Writes reading.csv (per reading unit), reading_by_stage.csv (shares grouped by
the stages of reader and source) and figures/fig5_reading.png.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..analyses.reading import reading, reading_by_stage
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw


@dataclass
class ReadConfig(QueryConfig):
    """Parameters of `run_read`, each with its default; recorded in every table's provenance."""
    stages: StageDefinition | str | Path | None = None  # None: even thirds, with a warning


@atomic
def run_read(model, data, out, config: ReadConfig | None = None, *, progress: bool = True) -> dict:
    """Component reading: which earlier components the decoder's MLP neurons and cross-attention heads read from (paper Fig. 5); returns a JSON-able summary (module docstring: what it writes).

        summary = run_read(gm, dataset, "runs/read/dsi-synth", ReadConfig(stages="stages.json", max_queries=256))
    """
    config = config or ReadConfig()
    return read_on(Inputs.for_queries(model, data, out, config), config, progress=progress)


def read_on(inputs: Inputs, config: ReadConfig, *, progress: bool = True) -> dict:
    gm = inputs.model
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"))
    df = reading(gm, inputs.texts, config.batch_size, progress=progress)
    record = {**config_record(config), "stages": stages.to_json()}
    path = inputs.write(df, "reading", record)
    by_stage = reading_by_stage(df, stages)
    stage_path = inputs.write(by_stage, "reading_by_stage", record)
    top = by_stage[by_stage.metric == "top_source_share"].sort_values("value", ascending=False).groupby(["reader_stage", "reader_component"]).head(1)
    return {
        "table": str(path),
        "by_stage": str(stage_path),
        "main_source": {f"{r.reader_stage}/{r.reader_component}": f"{r.source_stage}/{r.source_component} ({r.value:.1f}%)" for r in top.itertuples()},
        "figures": draw({"reading_by_stage": by_stage}, inputs.out, stages, gm.name),
    }
