"""`genir-mech swap`: give a model's decoder other models' encoder outputs (paper Table 2), and print both experiments.

    genir-mech swap --model dsi-synth --encoder-from dsi-synth-rd1 dsi-synth-rd2 t5-synth-base

Without --encoder-from: A's base model (from its model card) and every
checkpoint beside A trained on the same data without some documents.
"""
from __future__ import annotations

from . import Verb
from .options import check_checkpoint, checkpoint, load_data, load_model, model_arguments, output_arguments, output_dir, positive_int, split_list

TITLES = {"removed_docs": "Experiment 1: removed documents (paper Table 2)", "vanilla": "Experiment 2: vanilla encoder"}


def add_arguments(p):
    model_arguments(p, "model A, whose decoder is used")
    p.add_argument("--encoder-from", nargs="+", type=checkpoint, help="models B whose encoder output A's decoder gets (default: A's base and removed-documents variants beside A)")
    p.add_argument("--splits", default="test,validation", help="experiment 1: splits whose queries of the removed documents are used (default test,validation: all held-out)")
    p.add_argument("--vanilla-split", default="validation", help="experiment 2: the split of A's correct queries (default validation)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="queries per forward pass (default 64)")
    output_arguments(p, "swap", "one JSON object with both tables")


def handler(args):
    import pandas as pd

    from ..errors import GenIRError
    from ..models.names import locate_model
    from ..pipelines.swap import SwapConfig, default_encoder_paths, run_swap  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "swap")
    # --encoder-from is checked while parsing; the default paths come from the model card and the folders beside A
    if not args.encoder_from and not locate_model(args.model).is_local:
        raise GenIRError(f"{args.model}: a hub model has no model card or variants beside it to take encoders from; give --encoder-from")
    paths = args.encoder_from or [check_checkpoint(p, "default --encoder-from") for p in default_encoder_paths(args.model)]
    gm = load_model(args)
    encoders = [load_model(args, p, self_check=False) for p in paths]
    config = SwapConfig(splits=split_list(args.splits), vanilla_split=args.vanilla_split, batch_size=args.batch_size)
    summary = run_swap(gm, load_data(args, gm), out, config, encoders=encoders)
    if not args.json:
        for key, title in TITLES.items():
            if key in summary:
                print(f"{title}\n{pd.DataFrame(summary[key]).to_markdown(index=False)}\n")
        print(f"tables and figures: {summary['out']}")
    return summary


VERB = Verb("Encoder swap: A's decoder on B's encoder output (removed-documents variants and a vanilla encoder)", add_arguments, handler)
