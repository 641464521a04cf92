"""Hits@1/5/10 of a minimal circuit (kept / zeroed / mean-ablated components) against the intact model (paper Table 4).

    from genir_mech.pipelines.circuit import CircuitConfig, run_circuit
    summary = run_circuit(gm, dataset, "runs/circuit/dsi-synth", CircuitConfig(stages="stages.json"))
    summary = run_circuit(gm, dataset, out, CircuitConfig(circuit="zero=self_attn@all;mean=mlp@0-3", eval_split="test"))
    summary["circuit_hits@1"], summary["figures"]["circuit"]

The circuit is scored on every query of `eval_split`; mean ablations use the
means over the model's correct queries of `split`. Writes circuit.csv,
figures/circuit.png (Hits@k bars, intact vs circuit) and Table 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..analyses.circuit import evaluate_circuits, paper_circuit, parse_circuit
from ..stage_definition import StageDefinition
from ..results_directory import atomic
from .inputs import Inputs, QueryConfig, config_record
from .rendering import draw


@dataclass
class CircuitConfig(QueryConfig):
    """Parameters of `run_circuit`, each with its default; recorded in every table's provenance."""
    stages: StageDefinition | str | Path | None = None  # None: even thirds, with a warning
    circuit: str | None = None  # method=kind@where;... or a JSON file; None: the paper's circuit for the stages
    eval_split: str | None = None  # None: test if the data has it, else the split it has
    rows_per_forward: int | None = None  # fixed rows per forward pass; None: as many as the memory budget holds (--max-memory)


@atomic
def run_circuit(model, data, out, config: CircuitConfig | None = None, *, progress: bool = True) -> dict:
    """Hits@1/5/10 of a minimal circuit (kept / zeroed / mean-ablated components) against the intact model (paper Table 4); returns a JSON-able summary (module docstring: what it writes).

        summary = run_circuit(gm, dataset, "runs/circuit/dsi-synth", CircuitConfig(stages="stages.json"))
    """
    config = config or CircuitConfig()
    return circuit_on(Inputs.for_queries(model, data, out, config), config, progress=progress)


def circuit_on(inputs: Inputs, config: CircuitConfig, *, progress: bool = True) -> dict:
    gm, dataset = inputs.model, inputs.dataset
    stages = StageDefinition.resolve(config.stages, gm.n_layers("decoder"))
    circuit = parse_circuit(gm, config.circuit, stages) if config.circuit else paper_circuit(gm, stages)
    name = "custom" if config.circuit else "paper"
    eval_split = dataset.resolve_split(config.eval_split, ("test", "validation", "train"))
    queries = dataset.split(eval_split)
    texts, docs = [q.text for q in queries], [dataset.qrels[q.query_id] for q in queries]  # every relevant document counts
    df = evaluate_circuits(gm, texts, docs, {name: circuit}, mean_texts=inputs.texts, batch_size=config.batch_size,
                           rows_per_forward=config.rows_per_forward, progress=progress)
    record = {**config_record(config), "stages": stages.to_json(), "circuit": config.circuit or "paper"}
    path = inputs.write(df, "circuit", record, eval_split=eval_split,
                        removed={m: [s.name for s, how in circuit.replace if how == m] for m in ("zero", "mean")})
    table = df.pivot_table(index="metric", columns="configuration", values="value", sort=False)
    return {
        "table": str(path),
        "n_eval_queries": len(texts),
        "eval_split": eval_split,
        **{f"{c}_{m}": float(v) for (m, c), v in table.stack().items()},
        "figures": draw({"circuit": df}, inputs.out, stages, gm.name),
    }
