"""`genir-mech demo`: the whole analysis pipeline on the embedded checkpoints, in a few minutes on a CPU.

Retrieval evaluation, stage localisation, the paper's decoder analyses with
the located stages, the encoder-swap experiments, a clean->corrupted patching
sweep with attribution patching, then figures, tables and one Markdown report
(`<out>/REPORT.md`). Every step is a library call or verb that can be run on its own.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..models.loading import load_genir, resolve_dataset
from ..provenance import provenance, write_table
from ..retrieval import evaluate
from . import Verb


def add_arguments(p):
    p.add_argument("--model", default="checkpoints/dsi-synth", help="the DSI checkpoint to analyse (default checkpoints/dsi-synth)")
    p.add_argument("--base", default="checkpoints/t5-synth-base", help="pretrained base: cross-model ablation and vanilla-encoder swap")
    p.add_argument("--variants", nargs="*", default=["checkpoints/dsi-synth-rd1", "checkpoints/dsi-synth-rd2"], help="removed-docs variants for the encoder swap")
    p.add_argument("--max-queries", type=int, default=256, help="correct validation queries analysed (seeded sample; default 256)")
    p.add_argument("--n-pairs", type=int, default=32, help="clean/corrupted pairs for the patching sweep (default 32)")
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def _verb(argv: list[str]):
    from ..cli import build_parser

    args = build_parser().parse_args(argv)
    return args.run(args)


def run(args):
    from ..analyses.paper import run_paper_analyses
    from .stage_localisation import run_stage_localisation
    from .swap import run_swap_experiments

    started = time.time()
    out = Path(args.out)
    timings: dict[str, float] = {}

    def step(name, fn):
        t0 = time.time()
        print(f"== {name}", flush=True)
        value = fn()
        timings[name] = round(time.time() - t0, 1)
        return value

    gm = load_genir(args.model)
    dataset = resolve_dataset(gm, None)

    def retrieval():
        metrics, per_query = evaluate(gm, dataset, "test")
        write_table(per_query, out / "retrieval" / "per_query", provenance(model=gm.path, data=dataset, config={"split": "test"}, started=started, metrics=metrics))
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
        return metrics

    metrics = step("retrieval (test split)", retrieval)
    found = step("stage localisation", lambda: run_stage_localisation(gm, dataset, out / "stages", max_queries=args.max_queries, bootstrap=100))
    print(found.summary())
    decoder = step("decoder analyses (contributions, logit lens, ablations, circuit, reading; figures and tables)",
                   lambda: run_paper_analyses(gm, dataset, out / "decoder", stages=out / "stages" / "stages.json", other_model=args.base, max_queries=args.max_queries))
    swap = step("encoder swap", lambda: run_swap_experiments(args.model, args.variants, args.base, out / "swap"))
    common = ["--model", args.model, "--n-pairs", str(args.n_pairs), "--n-boot", "200", "--json"]
    patching = {}
    for target in ("component", "head"):
        patching[target] = step(f"activation patching: {target}", lambda t=target: _verb(["patch", *common, "--target", t, "--out", str(out / "patching")]))
    patching["attribution"] = step("attribution patching (AtP*) + exact verification", lambda: _verb(["attribute", *common, "--verify-top-k", "10", "--out", str(out / "patching")]))
    # run_paper_analyses already drew the figures and tables; the swap verb wrote Table 2 and its figure.
    rendered = {k: v for k, v in decoder.items() if isinstance(v, str) and Path(v).suffix in {".png", ".md"}}
    rendered.update({f"swap_{k}": v for k, v in swap.items() if isinstance(v, str) and Path(v).suffix in {".png", ".md"}})
    rendered.update({f"patching_{t}": r["heatmap"] for t, r in patching.items() if "heatmap" in r})
    rendered.update({f"attribution_{k}": v for k, v in patching["attribution"].get("heatmaps", {}).items()})
    report = write_report(out, gm, metrics, found, swap, patching, rendered, timings)
    summary = {"report": str(report), "metrics": metrics, "stages": found.definition.to_json(), "seconds": round(time.time() - started, 1), "timings": timings}
    print(f"report: {report} ({summary['seconds']} s)")
    return summary


def write_report(out: Path, gm, metrics: dict, found, swap: dict, patching: dict, rendered: dict, timings: dict) -> Path:
    lines = [
        f"# genir_mech demo: {gm.name}",
        "",
        f"Model `{gm.path}`: {gm.n_layers('encoder')} encoder and {gm.n_layers('decoder')} decoder layers, {gm.adapter.n_heads} heads, {len(gm.docids)} docids.",
        "",
        "## Retrieval (test split, held-out templates)",
        "",
        "| " + " | ".join(metrics) + " |",
        "| " + " | ".join("---" for _ in metrics) + " |",
        "| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in metrics.values()) + " |",
        "",
        "## Stages (located automatically)",
        "",
        "```",
        found.summary(),
        "```",
        "",
        "## Encoder swap",
        "",
    ]
    for key, title in (("removed_docs", "Documents the encoder's model never saw (paper Table 2)"), ("vanilla", "Vanilla pretrained encoder")):
        if key in swap:
            lines += [f"{title}:", "", swap[key].to_markdown(index=False), ""]
    lines += ["## Outputs", ""]
    for name, path in sorted(rendered.items()):
        rel = Path(path).relative_to(out) if Path(path).is_relative_to(out) else Path(path)
        lines.append(f"- {name}: [{rel}]({rel})" + (f"\n\n  ![{name}]({rel})" if str(path).endswith(".png") else ""))
    lines += ["", "## Patching", ""]
    for target, result in patching.items():
        if "spearman" in result:
            lines.append(f"- {target}: Spearman rank correlation of AtP* with exact patching on its top candidates: {result['spearman']:.3f}")
        else:
            lines.append(f"- {target}: largest normalised effects `{json.dumps(result.get('top', []), default=str)[:600]}`")
    lines += ["", "## Time per step (s)", ""] + [f"- {k}: {v}" for k, v in timings.items()]
    path = out / "REPORT.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


VERB = Verb("run the whole pipeline on the embedded checkpoints and write figures, tables and a Markdown report", add_arguments, run)
