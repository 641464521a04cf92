"""Retrieval evaluation of a checkpoint: Hits@1/5/10 and MRR, per-query ranks, the correct-query list and a rank curve.

    from genir_mech.pipelines.evaluate import EvalConfig, run_eval
    summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    summary["hits@1"], summary["figures"]["retrieval_ranks"]

Writes per_query.csv, correct_queries.csv (with provenance) and
figures/retrieval_ranks.png (share of queries within rank r).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..provenance import provenance, write_table
from ..retrieval import evaluate
from ..results_directory import atomic
from .inputs import config_record
from .rendering import draw


@dataclass
class EvalConfig:
    """Parameters of `run_eval`, each with its default; recorded in every table's provenance."""
    split: str = "test"
    batch_size: int = 256


@atomic
def run_eval(model, data, out, config: EvalConfig | None = None) -> dict:
    """Retrieval evaluation of a checkpoint: Hits@1/5/10 and MRR, per-query ranks, the correct-query list and a rank curve; returns a JSON-able summary (module docstring: what it writes).

        summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    """
    config = config or EvalConfig()
    started, out = time.time(), Path(out)
    metrics, per_query = evaluate(model, data, config.split, config.batch_size)
    record = provenance(model=model.path, data=data, config=config_record(config), started=started, metrics=metrics)
    write_table(per_query, out / "per_query", record)
    correct = write_table(per_query[per_query.correct], out / "correct_queries", record)
    figures = draw({"per_query": per_query}, out, None, model.name)
    return {**metrics, "correct_queries": str(correct), "figures": figures}
