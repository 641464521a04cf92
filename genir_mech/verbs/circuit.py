"""`genir-mech circuit`: Hits@1/5/10 of a minimal circuit (kept / zeroed / mean-ablated components) against the intact model (paper Table 4).

    genir-mech circuit --model checkpoints/dsi-synth --stages runs/stages/dsi-synth/stages.json
    genir-mech circuit --model checkpoints/dsi-synth --circuit "zero=self_attn@all;mean=mlp@0-3" --eval-split test
"""
from __future__ import annotations

from ..analyses.circuit import evaluate_circuits, paper_circuit, parse_circuit
from ..errors import GenIRError
from . import Verb
from .analysis_inputs import add_query_arguments, add_stage_argument, load_inputs, resolve_stages


def add_arguments(p):
    add_query_arguments(p, "circuit")
    add_stage_argument(p)
    p.add_argument(
        "--circuit",
        help="components to remove: method=kind@where;... (where: all, stage names or layer ranges joined by +), or a JSON file "
        '{"zero": [site names], "mean": [...]}; default: the paper\'s circuit for the stages',
    )
    p.add_argument("--eval-split", default="test", help="query split the circuit is scored on, all its queries (default test); means come from --split's correct queries")


def run(args):
    inputs = load_inputs(args, "circuit")
    gm = inputs.gm
    stages = resolve_stages(args.stages, gm.n_layers("decoder"))
    circuit = parse_circuit(gm, args.circuit, stages) if args.circuit else paper_circuit(gm, stages)
    name = "custom" if args.circuit else "paper"
    queries = inputs.dataset.split(args.eval_split)
    if not queries:
        raise GenIRError(f"split {args.eval_split!r} has no queries (splits: {', '.join(inputs.dataset.splits)})")
    texts, docs = [q.text for q in queries], [inputs.dataset.relevant(q.query_id) for q in queries]
    df = evaluate_circuits(gm, texts, docs, {name: circuit}, mean_texts=inputs.texts, batch_size=args.batch_size, progress=True)
    config = {"mean_split": args.split, "eval_split": args.eval_split, "circuit": args.circuit or "paper", "stages": stages.to_json(),
              "removed": {m: [s.name for s, how in circuit.replace if how == m] for m in ("zero", "mean")}}
    path = inputs.write(df, "circuit", config)
    table = df.pivot_table(index="metric", columns="configuration", values="value", sort=False)
    summary = {"table": str(path), "n_eval_queries": len(texts), **{f"{c}_{m}": float(v) for (m, c), v in table.stack().items()}}
    if not args.json:
        print(table.round(2).to_string())
        print(f"table: {path}")
    return summary


VERB = Verb("Score a minimal circuit (kept / zeroed / mean-ablated decoder components) against the intact model (Table 4)", add_arguments, run)
