"""`genir-mech lens`: logit lens of the decoder's residuals, components and cross-attention heads (paper Fig. 4, Tables 5-6).

    genir-mech lens --model checkpoints/dsi-synth --top-k 10 --examples 32
"""
from __future__ import annotations

from ..analyses.logit_lens import docid_share_by_layer, logit_lens
from . import Verb
from .analysis_inputs import add_query_arguments, load_inputs


def add_arguments(p):
    add_query_arguments(p, "lens")
    p.add_argument("--top-k", type=int, default=10, help="decoded top tokens kept per cross-attention head (default 10)")
    p.add_argument("--examples", type=int, default=32, help="queries whose head top tokens are kept (default 32)")


def run(args):
    inputs = load_inputs(args, "lens")
    lens = logit_lens(inputs.gm, inputs.texts, inputs.query_ids, inputs.relevant_docs, args.batch_size, args.top_k, args.examples, progress=True)
    config = {"split": args.split, "max_queries": args.max_queries, "top_k": args.top_k, "examples": args.examples}
    path = inputs.write(lens.ranks, "lens", config)
    heads = inputs.write(lens.head_tokens, "lens_heads", config)
    r = lens.ranks
    resid = r[(r.facet == "resid_post") & (r.component == "mlp") & (r.metric == "relevant_rank")].groupby("layer").value.median()
    summary = {"table": str(path), "head_tokens": str(heads), "n_queries": len(inputs.queries), "median_relevant_rank_by_layer": resid.round(1).to_dict()}
    if not args.json:
        print("median vocabulary rank of the relevant docid after each layer:", resid.round(1).to_dict())
        print(docid_share_by_layer(r).pivot(index="layer", columns="metric", values="value").round(2).to_string())
        print(f"tables: {path}, {heads}")
    return summary


VERB = Verb("Logit lens: rank of the relevant docid, docid and non-docid ranks after every decoder sublayer, component and head", add_arguments, run)
