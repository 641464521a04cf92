"""`genir-mech contributions`: contribution ratio and cosines of every decoder component (paper Fig. 3).

    genir-mech contributions --model checkpoints/dsi-synth --stages runs/stages/dsi-synth/stages.json
"""
from __future__ import annotations

from ..analyses.contributions import contributions
from . import Verb
from .analysis_inputs import add_query_arguments, load_inputs, resolve_stages


def add_arguments(p):
    add_query_arguments(p, "contributions")
    p.add_argument(
        "--stages",
        help="stage definition (spec like priming=0-2,... or stages.json); its first stage's MLPs give the cos_priming metric (default: no cos_priming)",
    )
    p.add_argument("--encoder", action="store_true", help="also measure the encoder layers (averaged over each query's tokens)")


def run(args):
    inputs = load_inputs(args, "contributions")
    gm = inputs.gm
    stages = resolve_stages(args.stages, gm.n_layers("decoder"), default_even=False)
    sides = ("encoder", "decoder") if args.encoder else ("decoder",)
    df = contributions(gm, inputs.texts, inputs.query_ids, stages, args.batch_size, sides, progress=True)
    config = {"split": args.split, "max_queries": args.max_queries, "sides": list(sides), "stages": stages.to_json() if stages else None}
    path = inputs.write(df, "contributions", config)
    means = df[df.side == "decoder"].groupby(["metric", "layer", "component"]).value.mean()
    summary = {"table": str(path), "n_queries": len(inputs.queries)}
    summary.update({f"mean_ratio_{k}": float(means["ratio"].xs(k, level="component").mean()) for k in gm.adapter.kinds("decoder")})
    if not args.json:
        print(means["ratio"].unstack().round(3).to_string())
        print(f"table: {path}")
    return summary


VERB = Verb("Per-layer contribution ratio and residual cosines of every decoder component over the correct queries (Fig. 3)", add_arguments, run)
