"""`genir-mech read`: which earlier components the decoder's MLP neurons and cross-attention heads read from (paper Fig. 5).

    genir-mech read --model dsi-synth --stages runs/stages/dsi-synth/stages.json
"""
from __future__ import annotations

from . import Verb
from .options import load_data, load_model, model_arguments, output_arguments, output_dir, query_arguments, query_fields, stage_argument


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    stage_argument(p)
    output_arguments(p, "read")


def handler(args):
    from ..pipelines.read import ReadConfig, run_read  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "read")
    gm = load_model(args)
    summary = run_read(gm, load_data(args, gm), out, ReadConfig(**query_fields(args), stages=args.stages), progress=not args.json)
    if not args.json:
        print("main source of each reader (share of units whose top-scoring source it is):")
        for reader, source in summary["main_source"].items():
            print(f"  {reader:<28} <- {source}")
        print(f"tables: {summary['table']}, {summary['by_stage']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Component reading: shares of earlier components in what MLP neurons and cross-attention heads read (Fig. 5)", add_arguments, handler)
