"""`genir-mech attribute`: attribution patching (AtP and AtP* with the QK fix) for every node, optionally verified by exact patching.

    genir-mech attribute --model checkpoints/dsi-synth
    genir-mech attribute --model checkpoints/dsi-synth --verify-top-k 20 --n-pairs 64
    genir-mech attribute --model checkpoints/dsi-synth --direction noise --no-qk-fix

Writes per-pair estimates, bootstrap summaries, heatmaps per node family and,
with --verify-top-k, the exact effects of the top-k nodes and Spearman's rho.
"""
from __future__ import annotations

import pandas as pd

from ..figures.patching import plot_patching
from ..patching.aggregation import aggregate
from ..patching.attribution import METHODS, attribute, verify_top_k
from . import Verb
from .patch import add_pair_arguments, load_pair_inputs

# node families: (name, rows of the summary, heatmap layout)
FAMILIES = [
    ("resid", lambda s: (s.side == "decoder") & (s.component == "resid_post"), "resid"),
    ("components", lambda s: (s.side == "decoder") & s["head"].isna() & (s.component != "resid_post"), "component"),
    ("heads", lambda s: s["head"].notna(), "head"),
    ("encoder_positions", lambda s: s.site == "encoder.output", "encoder-position"),
    ("encoder_layer_positions", lambda s: (s.side == "encoder") & (s.site != "encoder.output"), "encoder-layer-position"),
]


def add_arguments(p):
    add_pair_arguments(p, "attribute")
    p.add_argument("--no-qk-fix", action="store_true", help="plain AtP only (skip the AtP* QK fix)")
    p.add_argument("--verify-top-k", type=int, default=0, help="exactly patch the K nodes with the largest mean |estimate| and report Spearman's rho")
    p.add_argument("--verify-method", choices=METHODS, help="which estimate to verify (default atp_qk, or atp with --no-qk-fix)")
    p.add_argument("--rows-per-forward", type=int, default=512, help="rows per forward pass of the exact verification (default 512)")


def run(args):
    inputs = load_pair_inputs(args, "attribute")
    gm, batch = inputs.gm, inputs.batch
    qk_fix = not args.no_qk_fix
    method = args.verify_method or ("atp_qk" if qk_fix else "atp")
    table = attribute(gm, batch, direction=args.direction, qk_fix=qk_fix, pairs_per_batch=args.pairs_per_batch, progress=not args.json)
    config = {"direction": args.direction, "qk_fix": qk_fix, "pairs_per_batch": args.pairs_per_batch, "n_boot": args.n_boot, "align": args.align,
              "metric": "logit_diff"}
    per_pair = inputs.write(table, "attribution_per_pair", config)
    summary = pd.concat([aggregate(table, value=v, n_boot=args.n_boot, seed=args.seed) for v in ("estimate", "normalised")], ignore_index=True)
    summary_path = inputs.write(summary, "attribution_summary", config)
    result = {"per_pair": str(per_pair), "summary": str(summary_path), "n_pairs": len(batch), "n_nodes": int(table.groupby(["site", "head", "position"], dropna=False).ngroups),
              "direction": args.direction, "heatmaps": {}}
    shown = summary[(summary.method == method) & (summary.value == "estimate")]
    for name, rows, layout in FAMILIES:
        part = shown[rows(shown)]
        if not part.empty:
            result["heatmaps"][name] = str(plot_patching(part, inputs.out / f"attribution_{name}.png", layout, label=f"{method}: estimated logit-diff change",
                                                         title=f"{gm.name}: {method} ({args.direction}, {len(batch)} pairs)"))
    if args.verify_top_k:
        check, rho = verify_top_k(gm, batch, table, args.verify_top_k, method=method, rows_per_forward=args.rows_per_forward,
                                  pairs_per_batch=args.pairs_per_batch, progress=not args.json)
        result["verification"] = str(inputs.write(check, f"verify_top{args.verify_top_k}_{method}", {**config, "k": args.verify_top_k, "method": method}, spearman=rho))
        result["spearman"] = rho
    if not args.json:
        top = shown.reindex(shown["mean"].dropna().abs().sort_values(ascending=False).index).head(8)
        print(f"largest {method} estimates of the logit-diff change ({args.direction}):")
        for r in top.itertuples():
            label = r.site + (f"[head={r.head}]" if pd.notna(r.head) else "") + (f"[position={r.position}]" if pd.notna(r.position) else "")
            print(f"  {label}: {r.mean:+.3f}  [{r.ci_low:+.3f}, {r.ci_high:+.3f}]")
        if args.verify_top_k:
            print(f"exact patching of the top {args.verify_top_k}: Spearman rho = {result['spearman']:.3f} ({result['verification']})")
        print(f"tables: {per_pair}, {summary_path}")
    return result


VERB = Verb("Attribution patching (AtP, AtP* QK fix) for every decoder component, head and encoder position; --verify-top-k checks it exactly", add_arguments, run)
