"""`genir-mech eval`: retrieval metrics of a GenIR checkpoint, its list of correct queries and a rank curve.

    genir-mech eval --model checkpoints/dsi-synth --split test
"""
from __future__ import annotations

from . import Verb
from .options import positive_int, load_data, load_model, model_arguments, output_arguments, output_dir


def add_arguments(p):
    model_arguments(p)
    p.add_argument("--split", default="test", help="query split to evaluate (default test)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="queries per forward pass (default 256)")
    output_arguments(p, "eval", "one JSON object with the metrics")


def handler(args):
    from ..pipelines.evaluate import EvalConfig, run_eval  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "eval")
    gm = load_model(args)
    summary = run_eval(gm, load_data(args, gm), out, EvalConfig(split=args.split, batch_size=args.batch_size))
    if not args.json:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items() if k != "figures"))
    return summary


VERB = Verb("Hits@1/5/10 and MRR (ir_measures) of a checkpoint on a query split; writes the correct-query list and a rank curve", add_arguments, handler)
