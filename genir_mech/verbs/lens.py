"""`genir-mech lens`: logit lens of the decoder's residuals, components and cross-attention heads (paper Fig. 4, Tables 5-6).

    genir-mech lens --model dsi-synth --top-k 10 --examples 32
"""
from __future__ import annotations

from . import Verb
from .options import load_data, load_model, model_arguments, output_arguments, output_dir, positive_int, query_arguments, query_fields, stage_argument, step_arguments, steps_field


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    stage_argument(p, "stage definition (spec or stages.json): shades the figure and groups Tables 5-6 (default: none)")
    p.add_argument("--top-k", type=positive_int, default=10, help="decoded top tokens kept per cross-attention head (default 10)")
    p.add_argument("--examples", type=positive_int, default=32, help="queries whose head top tokens are kept (default 32)")
    step_arguments(p)
    output_arguments(p, "lens")


def handler(args):
    import pandas as pd

    from ..pipelines.lens import LensConfig, run_lens  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "lens")
    gm = load_model(args)
    config = LensConfig(**query_fields(args), top_k=args.top_k, examples=args.examples, stages=args.stages, steps=steps_field(args))
    summary = run_lens(gm, load_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        print("median vocabulary rank of the relevant docid after each layer:", summary["median_relevant_rank_by_layer"])
        print(pd.DataFrame(summary["docid_share_by_layer"]).to_string())
        print(f"tables: {summary['table']}, {summary['head_tokens']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Logit lens: rank of the relevant docid, docid and non-docid ranks after every decoder sublayer, component and head", add_arguments, handler)
