"""`genir-mech attribute`: attribution patching (AtP and AtP* with the QK fix) for every node, optionally verified by exact patching.

    genir-mech attribute --model dsi-synth
    genir-mech attribute --model dsi-synth --verify-top-k 20 --n-pairs 64
    genir-mech attribute --model dsi-synth --direction noise --no-qk-fix
"""
from __future__ import annotations

from ..vocabulary import ATTRIBUTION_METHODS
from . import Verb
from .options import (
    load_model,
    load_pair_data,
    model_arguments,
    non_negative_int,
    output_arguments,
    output_dir,
    pair_arguments,
    pair_fields,
    print_pair_counts,
    rows_argument,
    step_arguments,
    steps_field,
)


def add_arguments(p):
    model_arguments(p)
    pair_arguments(p)
    p.add_argument("--no-qk-fix", action="store_true", help="plain AtP only (skip the AtP* QK fix)")
    p.add_argument("--verify-top-k", type=non_negative_int, default=0,
                   help="exactly patch the K nodes with the largest mean |estimate| and report Spearman's rho (default 0: no verification)")
    p.add_argument("--verify-method", choices=ATTRIBUTION_METHODS, help="which estimate to verify (default atp_qk, or atp with --no-qk-fix)")
    rows_argument(p, "rows per forward pass of the exact verification")
    step_arguments(p)
    output_arguments(p, "attribute")


def handler(args):
    from ..pipelines.attribute import AttributeConfig, run_attribute  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "attribute")
    gm = load_model(args)
    config = AttributeConfig(**pair_fields(args), steps=steps_field(args), direction=args.direction, qk_fix=not args.no_qk_fix, verify_top_k=args.verify_top_k, verify_method=args.verify_method,
                             rows_per_forward=args.rows_per_forward, pairs_per_batch=args.pairs_per_batch, n_boot=args.n_boot)
    summary = run_attribute(gm, load_pair_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        print_pair_counts(summary["pairs"], args.all_pairs)
        print(f"largest {summary['method']} estimates of the logit-diff change ({args.direction}):")
        for t in summary["top"]:
            print(f"  {t['node']}: {t['estimate']:+.3f}  [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
        if "spearman" in summary:
            print(f"exact patching of the top {args.verify_top_k}: Spearman rho = {summary['spearman']:.3f} ({summary['verification']})")
        for step, found in summary.get("steps", {}).items():
            if "spearman" in found:
                print(f"docid step {step}: exact patching of the top {args.verify_top_k}: Spearman rho = {found['spearman']:.3f}")
        print(f"tables: {summary['per_pair']}, {summary['summary']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Attribution patching (AtP, AtP* QK fix) for every decoder component, head and encoder position; --verify-top-k checks it exactly", add_arguments, handler)
