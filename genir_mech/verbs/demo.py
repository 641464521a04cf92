"""`genir-mech demo`: the whole analysis on the embedded checkpoints, in a few minutes on a CPU (pipelines.demo).

    genir-mech demo --out runs/demo
"""
from __future__ import annotations

from . import Verb
from .options import checkpoint, output_directory, positive_int


def add_arguments(p):
    p.add_argument("--model", type=checkpoint, default="checkpoints/dsi-synth", help="the DSI checkpoint to analyse (default checkpoints/dsi-synth)")
    p.add_argument("--base", type=checkpoint, default="checkpoints/t5-synth-base", help="pretrained base: cross-model ablation and vanilla-encoder swap")
    p.add_argument("--variants", nargs="*", type=checkpoint, default=["checkpoints/dsi-synth-rd1", "checkpoints/dsi-synth-rd2"], help="removed-docs variants for the encoder swap")
    p.add_argument("--max-queries", type=positive_int, default=256, help="correct validation queries analysed (seeded sample; default 256)")
    p.add_argument("--n-pairs", type=positive_int, default=32, help="clean/corrupted pairs for the patching sweep (default 32)")
    p.add_argument("--out", type=output_directory, default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def handler(args):
    from ..models.loading import load_genir, resolve_dataset
    from ..pipelines.demo import DemoConfig, run_demo  # torch and nnsight: only once the arguments are valid

    # Each checkpoint is loaded once here and handed to every pipeline that needs it.
    gm = load_genir(args.model)
    base = load_genir(args.base, self_check=False) if args.base else None
    variants = [load_genir(p) for p in args.variants]
    config = DemoConfig(max_queries=args.max_queries, n_pairs=args.n_pairs)
    summary = run_demo(gm, resolve_dataset(gm, None), args.out, config, base=base, variants=variants, progress=not args.json)
    if not args.json:
        print(f"report: {summary['report']} ({summary['seconds']} s)")
    return summary


VERB = Verb("run the whole pipeline on the embedded checkpoints and write figures, tables and a Markdown report", add_arguments, handler)
