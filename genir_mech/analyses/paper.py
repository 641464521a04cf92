"""Run the paper's decoder analyses on one checkpoint and write every table, figure and a short report.

    gm = load_genir("checkpoints/dsi-synth")
    summary = run_paper_analyses(gm, resolve_dataset(gm, None), "runs/paper/dsi-synth",
                                 stages="runs/stages/dsi-synth/stages.json", other_model="checkpoints/t5-synth-base", max_queries=256)

Queries: the model's correct validation queries (a seeded sample of at most
`max_queries`); the circuit is scored on all test queries. Writes the tidy
tables with provenance (contributions, lens, lens_heads, ablation,
layer_ablation, circuit, reading, reading_by_stage), figures/ and tables/
(genir_mech.figures.report) and decoder_analyses.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import GenIRError
from ..figures.report import render_results
from ..provenance import provenance, write_table
from ..retrieval import correct_queries
from ..stage_definition import StageDefinition
from .ablation import ablate, layer_ablation
from .circuit import evaluate_circuits, paper_circuit
from .contributions import contributions
from .logit_lens import logit_lens
from .reading import reading, reading_by_stage
from .tidy import sample_queries


def _stages(gm, stages) -> StageDefinition:
    if stages is None:
        print("warning: no stage definition given; using three even thirds of the decoder layers", file=sys.stderr)
        return StageDefinition.even_thirds(gm.n_layers("decoder"))
    definition = stages if isinstance(stages, StageDefinition) else StageDefinition.parse(str(stages))
    return definition.check(gm.n_layers("decoder"))


def run_paper_analyses(gm, dataset, out_dir, stages=None, other_model=None, max_queries: int | None = None, batch_size: int = 64, seed: int = 0, progress: bool = True) -> dict:
    """Contributions, logit lens, stage and layer ablations, the paper's circuit and component reading (see module docstring)."""
    started = time.time()
    out = Path(out_dir)
    stages = _stages(gm, stages)
    if isinstance(other_model, (str, Path)):
        from ..models.loading import load_genir

        other_model = load_genir(str(other_model), self_check=False)
    queries = sample_queries(correct_queries(gm, dataset, "validation", batch_size), max_queries, seed)
    if not queries:
        raise GenIRError(f"{gm.path}: no correct validation queries; nothing to analyse")
    texts, ids = [q.text for q in queries], [q.query_id for q in queries]
    docs = [dataset.relevant(i) for i in ids]
    test = dataset.split("test")
    methods = ("zero", "mean", "cross-model") if other_model is not None else ("zero", "mean")
    config = {"split": "validation", "max_queries": max_queries, "stages": stages.to_json(), "methods": list(methods), "other": getattr(other_model, "path", None)}
    timings: dict[str, float] = {}

    def write(df, name, **extra):
        record = provenance(model=gm.path, data=dataset, config=config, seed=seed, started=started, n_queries=len(queries), **extra)
        return write_table(df, out / name, record)

    def timed(name, fn):
        t0 = time.time()
        result = fn()
        timings[name] = round(time.time() - t0, 2)
        return result

    kinds = gm.adapter.kinds("decoder")
    write(timed("contributions", lambda: contributions(gm, texts, ids, stages, batch_size, progress=progress)), "contributions")
    lens = timed("logit_lens", lambda: logit_lens(gm, texts, ids, docs, batch_size, progress=progress))
    write(lens.ranks, "lens")
    write(lens.head_tokens, "lens_heads")
    common = dict(other=other_model, batch_size=batch_size, progress=progress)
    write(timed("stage_ablation", lambda: ablate(gm, texts, docs, stages, kinds, methods, **common)), "ablation")
    write(timed("layer_ablation", lambda: layer_ablation(gm, texts, docs, kinds, methods, **common)), "layer_ablation")
    if test:
        circuit = paper_circuit(gm, stages)
        test_docs = [dataset.relevant(q.query_id) for q in test]
        df = timed("circuit", lambda: evaluate_circuits(gm, [q.text for q in test], test_docs, {"paper": circuit}, mean_texts=texts, batch_size=batch_size, progress=progress))
        write(df, "circuit", eval_split="test", removed={m: [s.name for s, how in circuit.replace if how == m] for m in ("zero", "mean")})
    read = timed("reading", lambda: reading(gm, texts, batch_size, progress=progress))
    write(read, "reading")
    write(reading_by_stage(read, stages), "reading_by_stage")
    made = render_results(out)
    report = write_report(out, gm, stages, len(queries), made, timings)
    return {"out": str(out), "report": str(report), "n_queries": len(queries), "stages": stages.to_json()["stages"], "seconds": timings, **made}


def write_report(out: Path, gm, stages: StageDefinition, n_queries: int, made: dict[str, str], timings: dict[str, float]) -> Path:
    """decoder_analyses.md: the tables inline and links to the figures."""
    lines = [
        f"# Decoder analyses of {gm.name}",
        "",
        f"{n_queries} correct validation queries; stages: " + ", ".join(f"{s.name} = layers {min(s.layers)}-{max(s.layers)}" for s in stages.stages if s.layers) + f" ({stages.source or 'given'}).",
        "",
    ]
    for key in ("fig3", "fig4", "fig5"):
        if key in made:
            lines += [f"![{key}]({Path(made[key]).relative_to(out)})", ""]
    for key in ("table3", "table4", "table5", "table3_per_layer", "table6"):
        if key in made:
            lines += [Path(made[key]).read_text(), ""]
    lines.append("Wall time per analysis (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    path = out / "decoder_analyses.md"
    path.write_text("\n".join(lines) + "\n")
    return path
