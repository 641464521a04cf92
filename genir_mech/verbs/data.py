"""`genir-mech data`: write a synthetic corpus (or re-export any loadable corpus) as DSI-style JSONL."""
from __future__ import annotations

from . import Verb
from .options import data_spec, output_directory


def add_arguments(p):
    p.add_argument("--data", type=data_spec, default="synthetic:n_docs=1000,seed=0",
                   help="data spec: synthetic:n_docs=N,seed=S,attribute_values=V,n_pairs=P | BEIR dir | DSI JSONL dir")
    p.add_argument("--out", type=output_directory, required=True, help="directory for documents.jsonl, queries.jsonl and pairs.jsonl")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")


def handler(args):
    from ..data.loaders import load_dataset, save_dsi_jsonl

    ds = load_dataset(args.data)
    save_dsi_jsonl(ds, args.out)
    summary = {"documents": len(ds.documents), **{f"queries_{s}": len(ds.split(s)) for s in ds.splits}, "pairs": len(ds.pairs), "data_hash": ds.data_hash(), "out": args.out}
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


VERB = Verb("generate the synthetic corpus (documents, split queries, matched pairs) or convert a corpus to DSI JSONL", add_arguments, handler)
