"""The paper's decoder analyses on one checkpoint: every table, figure and a short report, from one set of queries.

    from genir_mech.pipelines.decoder_analyses import DecoderAnalysesConfig, run_decoder_analyses
    summary = run_decoder_analyses(gm, dataset, "runs/paper/dsi-synth",
                                   DecoderAnalysesConfig(stages="runs/stages/dsi-synth/stages.json", max_queries=256), other=base_gm)
    summary["report"], summary["fig3"], summary["table3"]

Runs the contributions, logit lens, stage and single-layer ablation, circuit
and reading pipelines on the same queries (the model's correct `split`
queries, a seeded sample of at most `max_queries`; the circuit is scored on all
`eval_split` queries), so their tables and figures land in one folder:
the tidy tables with provenance, figures/ and tables/ (Fig. 3-5, Tables 3-6)
and decoder_analyses.md.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .ablate import AblateConfig, ablate_on
from .circuit import CircuitConfig, circuit_on
from .contributions import ContributionsConfig, contributions_on
from .inputs import Inputs, QueryConfig
from .lens import LensConfig, lens_on
from .read import ReadConfig, read_on


@dataclass
class DecoderAnalysesConfig(QueryConfig):
    """Parameters of `run_decoder_analyses`, each with its default; recorded in every table's provenance."""
    stages: StageDefinition | str | Path | None = None  # None: even thirds, with a warning
    methods: Sequence[str] | None = None  # ablation methods; default zero and mean, plus cross-model when `other` is given
    eval_split: str = "test"  # the circuit is scored on all of this split's queries (skipped when the split is empty)
    top_k: int = 10
    examples: int = 32
    rows_per_forward: int | None = None  # fixed rows per forward pass; None: as many as the memory budget holds (--max-memory)


@atomic
def run_decoder_analyses(model, data, out, config: DecoderAnalysesConfig | None = None, *, other=None, progress: bool = True) -> dict:
    """The paper's decoder analyses on one checkpoint: every table, figure and a short report, from one set of queries; returns a JSON-able summary (module docstring: what it writes).

        summary = run_decoder_analyses(gm, dataset, "runs/paper/dsi-synth",
    """
    config = config or DecoderAnalysesConfig()
    gm = model
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"))  # resolved once: one warning, one definition for every step
    methods = tuple(config.methods or (("zero", "mean", "cross-model") if other is not None else ("zero", "mean")))
    inputs = Inputs.for_queries(gm, data, out, config)
    queries = dict(split=config.split, max_queries=config.max_queries, seed=config.seed, batch_size=config.batch_size)
    timings: dict[str, float] = {}
    made: dict[str, str] = {}

    def step(name, fn):
        t0 = time.time()
        result = fn()
        timings[name] = round(time.time() - t0, 2)
        made.update(result.get("figures", {}))
        return result

    step("contributions", lambda: contributions_on(inputs, ContributionsConfig(**queries, stages=stages), progress=progress))
    step("logit_lens", lambda: lens_on(inputs, LensConfig(**queries, top_k=config.top_k, examples=config.examples, stages=stages), progress=progress))
    ablation = AblateConfig(**queries, stages=stages, methods=methods, per_layer=True, rows_per_forward=config.rows_per_forward)
    step("ablation", lambda: ablate_on(inputs, ablation, other=other, progress=progress))
    if data.split(config.eval_split) and len(stages.stages) >= 3:  # the paper's circuit needs three stages (analyses.circuit.paper_circuit)
        step("circuit", lambda: circuit_on(inputs, CircuitConfig(**queries, stages=stages, eval_split=config.eval_split, rows_per_forward=config.rows_per_forward), progress=progress))
    step("reading", lambda: read_on(inputs, ReadConfig(**queries, stages=stages), progress=progress))
    report = write_report(inputs.out, gm, stages, len(inputs.queries), made, timings)
    return {"out": str(inputs.out), "report": str(report), "n_queries": len(inputs.queries), "stages": stages.to_json()["stages"], "seconds": timings, **made}


def write_report(out: Path, gm, stages: StageDefinition, n_queries: int, made: dict[str, str], timings: dict[str, float]) -> Path:
    """decoder_analyses.md: the tables inline and links to the figures."""
    lines = [
        f"# Decoder analyses of {gm.name}",
        "",
        f"{n_queries} correct queries; stages: " + ", ".join(f"{s.name} = layers {min(s.layers)}-{max(s.layers)}" for s in stages.stages if s.layers) + f" ({stages.source or 'given'}).",
        "",
    ]
    for key in ("fig3", "fig4", "fig5", "ablation", "layer_ablation", "circuit"):
        if key in made:
            lines += [f"![{key}]({Path(made[key]).relative_to(out)})", ""]
    for key in ("table3", "table4", "table5", "table3_per_layer", "table6"):
        if key in made:
            lines += [Path(made[key]).read_text(), ""]
    lines.append("Wall time per analysis (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    path = out / "decoder_analyses.md"
    path.write_text("\n".join(lines) + "\n")
    return path
