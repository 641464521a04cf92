"""`genir-mech ablate`: zero / mean / cross-model ablation of component types per stage (paper Table 3), and per layer.

    genir-mech ablate --model dsi-synth --stages runs/stages/dsi-synth/stages.json
    genir-mech ablate --model dsi-synth --methods zero,mean,cross-model --other t5-synth-base --per-layer
"""
from __future__ import annotations

from ..errors import GenIRError
from ..vocabulary import ABLATION_METHODS, COMPONENT_KINDS
from . import Verb
from .options import (
    checkpoint,
    load_data,
    load_model,
    model_arguments,
    name_list,
    output_arguments,
    output_dir,
    query_arguments,
    query_fields,
    rows_argument,
    split_list,
    stage_argument,
    step_arguments,
    steps_field,
)

METHODS, KINDS = ABLATION_METHODS, COMPONENT_KINDS


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    stage_argument(p)
    p.add_argument("--kinds", type=name_list(KINDS, "component kinds"), help="component types, comma-separated (default all of the decoder's)")
    p.add_argument("--methods", type=name_list(METHODS, "ablation methods"), default="zero,mean", help=f"comma-separated, from {', '.join(METHODS)} (default zero,mean)")
    p.add_argument("--other", type=checkpoint, help="checkpoint whose component outputs replace this model's for cross-model (same tokenizer and d_model)")
    p.add_argument("--per-layer", action="store_true", help="also ablate one component in one layer at a time")
    rows_argument(p, "(ablation, query) rows per forward pass")
    step_arguments(p)
    output_arguments(p, "ablate")


def handler(args):
    import pandas as pd

    from ..pipelines.ablate import AblateConfig, run_ablate  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "ablate")
    config = AblateConfig(**query_fields(args), steps=steps_field(args), stages=args.stages, kinds=split_list(args.kinds), methods=split_list(args.methods),
                          per_layer=args.per_layer, rows_per_forward=args.rows_per_forward)
    if "cross-model" in config.methods and not args.other:
        raise GenIRError("--methods cross-model needs --other CHECKPOINT (e.g. the pretrained base model)")
    gm = load_model(args)
    other = load_model(args, args.other, self_check=False) if args.other else None
    summary = run_ablate(gm, load_data(args, gm), out, config, other=other, progress=not args.json)
    if not args.json:
        print("% of correct queries whose relevant document leaves rank 1:")
        print(pd.DataFrame(summary["pct_left_rank1"]).T.round(1).to_string())
        print(f"table: {summary['table']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Ablate component types in all layers of each stage (zero, mean or cross-model) and report where the relevant document goes (Table 3)", add_arguments, handler)
