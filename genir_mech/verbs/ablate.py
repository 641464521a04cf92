"""`genir-mech ablate`: zero / mean / cross-model ablation of component types per stage (paper Table 3), and per layer.

    genir-mech ablate --model checkpoints/dsi-synth --stages runs/stages/dsi-synth/stages.json
    genir-mech ablate --model checkpoints/dsi-synth --methods zero,mean,cross-model --other checkpoints/t5-synth-base --per-layer
"""
from __future__ import annotations

from ..analyses.ablation import METHODS, ablate, layer_ablation
from ..errors import GenIRError
from ..models.loading import load_genir
from . import Verb
from .analysis_inputs import add_query_arguments, add_stage_argument, load_inputs, resolve_stages


def add_arguments(p):
    add_query_arguments(p, "ablate")
    add_stage_argument(p)
    p.add_argument("--kinds", default="self_attn,cross_attn,mlp", help="component types, comma-separated (default all three)")
    p.add_argument("--methods", default="zero,mean", help=f"comma-separated, from {', '.join(METHODS)} (default zero,mean)")
    p.add_argument("--other", help="checkpoint whose component outputs replace this model's for cross-model (same tokenizer and d_model)")
    p.add_argument("--per-layer", action="store_true", help="also ablate one component in one layer at a time")
    p.add_argument("--rows-per-forward", type=int, default=4096, help="(ablation, query) rows per forward pass (default 4096)")


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def run(args):
    inputs = load_inputs(args, "ablate")
    gm = inputs.gm
    stages = resolve_stages(args.stages, gm.n_layers("decoder"))
    kinds, methods = _split(args.kinds), _split(args.methods)
    other = None
    if "cross-model" in methods:
        if not args.other:
            raise GenIRError("--methods cross-model needs --other CHECKPOINT (e.g. the pretrained base model)")
        other = load_genir(args.other, self_check=False)
    common = dict(other=other, batch_size=args.batch_size, rows_per_forward=args.rows_per_forward, progress=True)
    df = ablate(gm, inputs.texts, inputs.relevant_docs, stages, kinds, methods, **common)
    config = {"split": args.split, "max_queries": args.max_queries, "kinds": kinds, "methods": methods, "other": args.other, "stages": stages.to_json()}
    path = inputs.write(df, "ablation", config)
    summary = {"table": str(path), "n_queries": len(inputs.queries), "stages": stages.to_json()["stages"]}
    if args.per_layer:
        per_layer = layer_ablation(gm, inputs.texts, inputs.relevant_docs, kinds, methods, **common)
        summary["per_layer_table"] = str(inputs.write(per_layer, "layer_ablation", config))
    left = df[(df.metric == "rank>1") & (df.method != "intact")].pivot_table(index=["stage", "component"], columns="method", values="value", sort=False)
    summary["pct_left_rank1"] = {f"{s}/{c}": row.to_dict() for (s, c), row in left.iterrows()}
    if not args.json:
        print("% of correct queries whose relevant document leaves rank 1:")
        print(left.round(1).to_string())
        print(f"table: {path}")
    return summary


VERB = Verb("Ablate component types in all layers of each stage (zero, mean or cross-model) and report where the relevant document goes (Table 3)", add_arguments, run)
