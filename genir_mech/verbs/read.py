"""`genir-mech read`: which earlier components the decoder's MLP neurons and cross-attention heads read from (paper Fig. 5).

    genir-mech read --model checkpoints/dsi-synth --stages runs/stages/dsi-synth/stages.json
"""
from __future__ import annotations

from ..analyses.reading import reading, reading_by_stage
from . import Verb
from .analysis_inputs import add_query_arguments, add_stage_argument, load_inputs, resolve_stages


def add_arguments(p):
    add_query_arguments(p, "read")
    add_stage_argument(p)


def run(args):
    inputs = load_inputs(args, "read")
    gm = inputs.gm
    stages = resolve_stages(args.stages, gm.n_layers("decoder"))
    df = reading(gm, inputs.texts, args.batch_size, progress=True)
    config = {"split": args.split, "max_queries": args.max_queries, "stages": stages.to_json()}
    path = inputs.write(df, "reading", config)
    by_stage = reading_by_stage(df, stages)
    stage_path = inputs.write(by_stage, "reading_by_stage", config)
    top = by_stage[by_stage.metric == "top_source_share"].sort_values("value", ascending=False).groupby(["reader_stage", "reader_component"]).head(1)
    summary = {"table": str(path), "by_stage": str(stage_path), "main_source": {f"{r.reader_stage}/{r.reader_component}": f"{r.source_stage}/{r.source_component} ({r.value:.1f}%)" for r in top.itertuples()}}
    if not args.json:
        print("main source of each reader (share of units whose top-scoring source it is):")
        for reader, source in summary["main_source"].items():
            print(f"  {reader:<28} <- {source}")
        print(f"tables: {path}, {stage_path}")
    return summary


VERB = Verb("Component reading: shares of earlier components in what MLP neurons and cross-attention heads read (Fig. 5)", add_arguments, run)
