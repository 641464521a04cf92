"""`genir-mech circuit`: Hits@1/5/10 of a minimal circuit (kept / zeroed / mean-ablated components) against the intact model (paper Table 4).

    genir-mech circuit --model dsi-synth --stages runs/stages/dsi-synth/stages.json
    genir-mech circuit --model dsi-synth --circuit "zero=self_attn@all;mean=mlp@0-3" --eval-split test
"""
from __future__ import annotations

from pathlib import Path

from . import Verb
from .options import existing_file, load_data, load_model, model_arguments, output_arguments, output_dir, query_arguments, query_fields, rows_argument, stage_argument


def circuit_argument(text: str) -> str:
    """An inline circuit spec, or an intervention / JSON file, which must exist now."""
    return existing_file(text) if Path(text).suffix.lower() in (".json", ".yaml", ".yml") else text


def add_arguments(p):
    model_arguments(p)
    query_arguments(p)
    stage_argument(p)
    p.add_argument(
        "--circuit", type=circuit_argument,
        help="components to remove: method=kind@where;... (where: all, stage names or layer ranges joined by +), an intervention "
        "file (.json/.yaml with zero/mean specs), or the older JSON {\"zero\": [site names], \"mean\": [...]}; default: the paper's circuit for the stages",
    )
    p.add_argument("--eval-split", help="query split the circuit is scored on, all its queries (default test when the data has it, else the "
                                        "split it has); means come from --split's correct queries")
    rows_argument(p, "(ablation, query) rows per forward pass")
    output_arguments(p, "circuit")


def handler(args):
    from ..pipelines.circuit import CircuitConfig, run_circuit  # torch and nnsight: only once the arguments are valid

    out = output_dir(args, "circuit")
    gm = load_model(args)
    config = CircuitConfig(**query_fields(args), stages=args.stages, circuit=args.circuit, eval_split=args.eval_split, rows_per_forward=args.rows_per_forward)
    summary = run_circuit(gm, load_data(args, gm), out, config, progress=not args.json)
    if not args.json:
        for key, value in summary.items():
            if key.startswith(("intact_", "circuit_", "relative_")):
                print(f"  {key:<28} {value:.2f}")
        print(f"table: {summary['table']}   figures: {', '.join(summary['figures'].values())}")
    return summary


VERB = Verb("Score a minimal circuit (kept / zeroed / mean-ablated decoder components) against the intact model (Table 4)", add_arguments, handler)
