"""The whole analysis on the embedded checkpoints, in a few minutes on a CPU, as one Markdown report.

    from genir_mech.pipelines.demo import DemoConfig, run_demo
    gm, base = load_genir("checkpoints/dsi-synth"), load_genir("checkpoints/t5-synth-base", self_check=False)
    variants = [load_genir(p) for p in ("checkpoints/dsi-synth-rd1", "checkpoints/dsi-synth-rd2")]
    summary = run_demo(gm, resolve_dataset(gm, None), "runs/demo", DemoConfig(max_queries=256), base=base, variants=variants)

Retrieval evaluation, stage localisation, the paper's decoder analyses with
the located stages, the encoder-swap experiments, clean->corrupted patching
sweeps and attribution patching, each a pipeline of its own writing into a
subfolder, then `<out>/REPORT.md`. Every model is loaded once, by the caller.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..results_directory import atomic
from .attribute import AttributeConfig, run_attribute
from .decoder_analyses import DecoderAnalysesConfig, run_decoder_analyses
from .evaluate import EvalConfig, run_eval
from .patch import PatchConfig, run_patch
from .report import write_report
from .stages import StagesConfig, run_stages
from .swap import SwapConfig, run_swap


@dataclass
class DemoConfig:
    """Parameters of `run_demo`, each with its default; recorded in every table's provenance."""
    max_queries: int | None = 256  # correct validation queries analysed (seeded sample)
    n_pairs: int = 32  # clean/corrupted pairs for patching
    bootstrap: int = 100  # stage-boundary bootstrap resamples
    n_boot: int = 200  # bootstrap resamples of the patching pairs
    verify_top_k: int = 10  # AtP* candidates checked by exact patching
    patch_targets: Sequence[str] = ("component", "head")
    all_pairs: bool = False  # patch every pair with two different documents, not only those the model gets right


@atomic
def run_demo(model, data, out, config: DemoConfig | None = None, *, base=None, variants: Sequence = (), progress: bool = True) -> dict:
    """The whole analysis on the embedded checkpoints, in a few minutes on a CPU, as one Markdown report; returns a JSON-able summary (module docstring: what it writes).

        summary = run_demo(gm, resolve_dataset(gm, None), "runs/demo", DemoConfig(max_queries=256), base=base, variants=variants)
    """
    config = config or DemoConfig()
    started, out, gm = time.time(), Path(out), model
    timings: dict[str, float] = {}

    def step(name, fn):
        t0 = time.time()
        if progress:  # step headers are the demo's progress report, above each step's own bars
            print(f"== {name}", flush=True)
        value = fn()
        timings[name] = round(time.time() - t0, 1)
        return value

    metrics = step("retrieval (test split)", lambda: run_eval(gm, data, out / "retrieval", EvalConfig(split="test")))
    found = step("stage localisation", lambda: run_stages(gm, data, out / "stages", StagesConfig(max_queries=config.max_queries, bootstrap=config.bootstrap), progress=progress))
    if progress:
        print(found["report"])
    decoder = step("decoder analyses (contributions, logit lens, ablations, circuit, reading)",
                   lambda: run_decoder_analyses(gm, data, out / "decoder", DecoderAnalysesConfig(stages=found["stage_definition"], max_queries=config.max_queries), other=base, progress=progress))
    encoders = [*variants, *([base] if base is not None else [])]
    swap = step("encoder swap", lambda: run_swap(gm, data, out / "swap", SwapConfig(), encoders=encoders)) if encoders else {}
    patching = {}
    for target in config.patch_targets:
        patching[target] = step(f"activation patching: {target}", lambda t=target: run_patch(gm, data, out / "patching", PatchConfig(target=t, n_pairs=config.n_pairs, n_boot=config.n_boot, all_pairs=config.all_pairs), progress=progress))
    patching["attribution"] = step("attribution patching (AtP*) + exact verification",
                                   lambda: run_attribute(gm, data, out / "patching", AttributeConfig(n_pairs=config.n_pairs, n_boot=config.n_boot, verify_top_k=config.verify_top_k, all_pairs=config.all_pairs), progress=progress))
    figures = {}
    for part, result in (("retrieval", metrics), ("stages", found), ("decoder", decoder), ("swap", swap), *patching.items()):
        figures.update({f"{part}_{k}": v for k, v in result.get("figures", {}).items()})
    figures.update({f"decoder_{k}": v for k, v in decoder.items() if k.startswith(("fig", "table")) and f"decoder_{k}" not in figures})
    report = write_report(out, gm, {k: v for k, v in metrics.items() if k not in ("figures", "correct_queries")}, found, swap, patching, figures, timings)
    summary = {"report": str(report), "metrics": {k: v for k, v in metrics.items() if k != "figures"}, "stages": found["stages"],
               "seconds": round(time.time() - started, 1), "timings": timings}
    return summary


EMBEDDED = {"model": "checkpoints/dsi-synth", "base": "checkpoints/t5-synth-base", "variants": ("checkpoints/dsi-synth-rd1", "checkpoints/dsi-synth-rd2")}


def demo_on_embedded_checkpoints(out: str | Path, config: DemoConfig | None = None, progress: bool = True) -> dict:
    """`run_demo` on the embedded checkpoints, each loaded once: the folder layout (`decoder/`, `swap/`, `patching/`)
    that paper/main.tex includes its figures and tables from (`genir-mech demo` runs the same experiments as a sweep,
    one folder per experiment)."""
    from ..models.loading import load_genir, resolve_dataset  # torch and nnsight: only when a demo runs
    gm = load_genir(EMBEDDED["model"])
    base = load_genir(EMBEDDED["base"], self_check=False)
    variants = [load_genir(p) for p in EMBEDDED["variants"]]
    return run_demo(gm, resolve_dataset(gm, None), out, config, base=base, variants=variants, progress=progress)


if __name__ == "__main__":  # paper/build.sh: python -m genir_mech.pipelines.demo OUT
    import sys
    print(demo_on_embedded_checkpoints(sys.argv[1])["report"])
