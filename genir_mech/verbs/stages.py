"""`genir-mech stages`: locate the decoder's stages of a checkpoint and save them as a stage definition.

    genir-mech stages --model dsi-synth --bootstrap 200
    genir-mech ablate --model dsi-synth --stages runs/stages/dsi-synth/stages.json
    genir-mech stages --model dsi-synth-semantic --steps all     # the stages of every docid step
"""
from __future__ import annotations

from ..vocabulary import PRIMING_MAX_MEAN_COST, STAGE_PENALTY, STAGE_RESOLUTION
from . import Verb
from .options import (
    bootstrap_count,
    fraction,
    load_data,
    load_model,
    model_arguments,
    output_arguments,
    output_dir,
    positive_float,
    positive_int,
    query_arguments,
    query_fields,
    step_arguments,
    steps_field,
)

DEFAULT_PENALTY, DEFAULT_RESOLUTION, CHEAP_ABLATION = STAGE_PENALTY, STAGE_RESOLUTION, PRIMING_MAX_MEAN_COST


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    p.add_argument("--bootstrap", type=bootstrap_count, default=200, help="bootstrap resamples of the queries for boundary stability (default 200)")
    p.add_argument("--min-stage-size", type=positive_int, help="fewest layers in a stage (default max(1, n_layers // 8))")
    p.add_argument("--max-stages", type=positive_int, help="most stages considered (default n_layers // min-stage-size)")
    p.add_argument("--penalty", type=positive_float, default=DEFAULT_PENALTY, help=f"multiplier of the BIC penalty of the profile criterion, which draws the knob path (stage_path.csv); the stage count comes from the paper's tests unless --no-ablation (default {DEFAULT_PENALTY})")
    p.add_argument("--resolution", type=positive_float, default=DEFAULT_RESOLUTION, help=f"the profile criterion's noise level (feature differences below it are noise), marked on the knob path; decides the count only with --no-ablation (default {DEFAULT_RESOLUTION})")
    p.add_argument("--cheap-ablation", type=fraction, default=CHEAP_ABLATION,
                   help=f"priming: at most this fraction of queries may leave rank 1 when the stage's MLPs are mean-ablated (default {CHEAP_ABLATION})")
    p.add_argument("--no-ablation", action="store_true", help="segment on contributions alone (faster; MLP stages then cannot be confirmed as priming)")
    step_arguments(p)
    output_arguments(p, "stages", "one JSON object with the stages and boundary stability")


def handler(args):
    from ..analyses.stage_localisation import NamingRules
    from ..pipelines.stages import StagesConfig, run_stages  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "stages")
    gm = load_model(args)
    config = StagesConfig(**query_fields(args), bootstrap=args.bootstrap, min_stage_size=args.min_stage_size, max_stages=args.max_stages, penalty=args.penalty,
                          resolution=args.resolution, rules=NamingRules(cheap_ablation=args.cheap_ablation), ablation=not args.no_ablation,
                          steps=steps_field(args))
    summary = run_stages(gm, load_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        print(summary["report"])
        print(f"stage definition: {summary['stage_definition']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Locate the decoder's stages (priming/bridging/interaction) by change-point segmentation, with bootstrap stability", add_arguments, handler)
