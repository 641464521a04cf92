"""`genir-mech demo`: the paper example (examples/paper.yaml) as a sweep on the embedded checkpoints, then REPORT.md.

    genir-mech demo --out runs/demo                 # rerun to resume after an interruption
    genir-mech sweep examples/paper.yaml            # the same experiments, without the report

The options below replace the example's models and sizes; everything else is the example file.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GenIRError
from . import Verb
from .options import checkpoint, device_arguments, model_action, output_directory, positive_int, revision_argument

EXAMPLE = "paper.yaml"  # genir_mech.embedded.example_config finds it in the installed package or the source checkout
SIZES = {"max_queries": "max_queries", "n_pairs": "n_pairs"}  # demo option -> the experiment parameter it sets wherever the example sets it


def add_arguments(p):
    p.add_argument("--model", type=checkpoint, action=model_action, default="dsi-synth", help="the DSI checkpoint to analyse: a folder, an embedded checkpoint or a hub id (default dsi-synth)")
    revision_argument(p)
    p.add_argument("--base", type=checkpoint, default="t5-synth-base", help="pretrained base: cross-model ablation and vanilla-encoder swap")
    p.add_argument("--variants", nargs="*", type=checkpoint, default=["dsi-synth-rd1", "dsi-synth-rd2"], help="removed-docs variants for the encoder swap")
    p.add_argument("--max-queries", type=positive_int, default=256, help="correct validation queries analysed (seeded sample; default 256)")
    p.add_argument("--n-pairs", type=positive_int, default=32, help="clean/corrupted pairs for the patching sweep (default 32)")
    p.add_argument("--out", type=output_directory, default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run the example's units here (default) or on Ray")
    device_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")


def paper_example(args):
    """The edit of examples/paper.yaml that the demo's options ask for."""
    def edit(raw: dict) -> dict:
        raw = dict(raw)
        variants = {f"variant{i + 1}": {"path": v} for i, v in enumerate(args.variants)}
        model = {"path": args.model, **({"revision": args.revision} if getattr(args, "revision", None) else {})}
        raw["models"] = {"dsi": model, "base": {"path": args.base, "self_check": False}, **variants}
        raw["device"], raw["dtype"] = args.device, args.dtype
        experiments = []
        for exp in raw["experiments"]:
            exp = {**exp, **{param: getattr(args, opt) for opt, param in SIZES.items() if param in exp}}
            if exp["run"] == "swap":
                exp["encoders"] = [*variants, "base"]
            experiments.append(exp)
        raw["experiments"] = experiments
        return raw
    return edit


def handler(args):
    import time

    from ..embedded import example_config
    from ..reporting.report import paper_report  # pydantic, torch and nnsight: only once the arguments are valid
    from ..sweep import load_config, run_sweep
    from ..sweep.runner import fail_if_any_failed, unit_lines

    example = example_config(EXAMPLE)
    if example is None:
        raise GenIRError(f"examples/{EXAMPLE}: the paper example is not part of this installation; reinstall genir_mech (pip install .) or run from a clone")
    started = time.time()
    config = load_config(example, out=args.out, edit=paper_example(args))
    manifest = run_sweep(config, backend=args.backend, progress=not args.json)
    report = paper_report(config, manifest)
    summary = {"report": str(report), "sweep": str(Path(args.out) / "SWEEP.json"), "seconds": round(time.time() - started, 1),
               "timings": {uid: u["seconds"] for uid, u in manifest["units"].items()}, "skipped": manifest["skipped"]}
    if not args.json:
        print(unit_lines(manifest))
        print(f"report: {report} ({summary['seconds']} s)")
    fail_if_any_failed(manifest, Path(args.out) / "SWEEP.json")
    return summary

VERB = Verb("run the paper example (examples/paper.yaml) on the embedded checkpoints as a resumable sweep and write figures, tables and a Markdown report", add_arguments, handler)
