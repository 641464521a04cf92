"""`genir-mech patch`: activation patching sweeps over clean/corrupted query pairs, with tables and heatmaps.

    genir-mech patch --model dsi-synth --target component
    genir-mech patch --model dsi-synth --target head --direction noise --n-pairs 64 --max-memory 2GiB
    genir-mech patch --model dsi-synth --target encoder-position --pairs my_pairs.jsonl --align left-pad
    genir-mech patch --model dsi-synth --specs my_sweep.yaml      # a saved sweep (intervention file, JSON or YAML)

By default only pairs whose clean query ranks its document first and whose
corrupted query ranks its own document first are kept (`--all-pairs` keeps
every pair); the count is printed and written to pairs.csv.
"""
from __future__ import annotations

from ..errors import GenIRError
from ..vocabulary import COMPONENT_KINDS, PATCH_TARGETS
from . import Verb
from .options import (
    existing_file,
    load_model,
    load_pair_data,
    model_arguments,
    name_list,
    output_arguments,
    output_dir,
    pair_arguments,
    pair_fields,
    print_pair_counts,
    rows_argument,
    split_list,
    step_arguments,
    steps_field,
)


def add_arguments(p):
    model_arguments(p)
    pair_arguments(p)
    p.add_argument("--target", choices=PATCH_TARGETS, help="what to patch: decoder resid per layer, decoder components, attention heads, "
                                                     "encoder output positions, encoder layer outputs per position")
    p.add_argument("--specs", type=existing_file, help="a saved sweep instead of --target: an intervention file (.json/.yaml, as written to <out>/<target>_specs.json) or the older JSON list of {site, head, position}")
    p.add_argument("--kinds", type=name_list(COMPONENT_KINDS, "component kinds"), help="component kinds for --target component/head, comma-separated (default all; heads: self_attn,cross_attn)")
    rows_argument(p, "patched rows (patch x pair) per forward pass")
    step_arguments(p)
    output_arguments(p, "patch")


def handler(args):
    if bool(args.target) == bool(args.specs):
        raise GenIRError("give exactly one of --target or --specs")
    from ..pipelines.patch import PatchConfig, run_patch  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "patch")
    gm = load_model(args)
    config = PatchConfig(**pair_fields(args), steps=steps_field(args), target=args.target, specs=args.specs, kinds=split_list(args.kinds), direction=args.direction,
                         rows_per_forward=args.rows_per_forward, pairs_per_batch=args.pairs_per_batch, n_boot=args.n_boot)
    summary = run_patch(gm, load_pair_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        print_pair_counts(summary["pairs"], args.all_pairs)
        print(f"largest changes of the normalised logit-diff effect ({args.direction}; 0 = corrupted run, 1 = clean run):")
        for t in summary["top"]:
            print(f"  {t['patch']}: {t['normalised_effect']:+.3f}  [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]")
        print(f"tables: {summary['per_pair']}, {summary['summary']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Activation patching over clean/corrupted query pairs: decoder resid, components, heads, encoder positions; tables + heatmaps", add_arguments, handler)
