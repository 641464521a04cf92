"""`genir-mech contributions`: contribution ratio and cosines of every decoder component (paper Fig. 3).

    genir-mech contributions --model dsi-synth --stages runs/stages/dsi-synth/stages.json
"""
from __future__ import annotations

from . import Verb
from .options import load_data, load_model, model_arguments, output_arguments, output_dir, query_arguments, query_fields, stage_argument, step_arguments, steps_field


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    stage_argument(p, "stage definition (spec like priming=0-2,... or stages.json); its first stage's MLPs give the cos_priming metric (default: no cos_priming)")
    p.add_argument("--encoder", action="store_true", help="also measure the encoder layers (averaged over each query's tokens)")
    step_arguments(p)
    output_arguments(p, "contributions")


def handler(args):
    import pandas as pd

    from ..pipelines.contributions import ContributionsConfig, run_contributions  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "contributions")
    gm = load_model(args)
    config = ContributionsConfig(**query_fields(args), stages=args.stages, encoder=args.encoder, steps=steps_field(args))
    summary = run_contributions(gm, load_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        print("mean contribution ratio per layer:")
        print(pd.DataFrame(summary["mean_ratio_by_layer"]).round(3).T.to_string())
        print(f"table: {summary['table']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Per-layer contribution ratio and residual cosines of every decoder component over the correct queries (Fig. 3)", add_arguments, handler)
