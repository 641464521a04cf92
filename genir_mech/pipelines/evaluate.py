"""Retrieval evaluation of a checkpoint: ir_measures metrics on the full graded qrels, per-query ranks, the correct-query list, a rank curve.

    from genir_mech.pipelines.evaluate import EvalConfig, run_eval
    summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    summary["Success@1"], summary["nDCG@10"], summary["hits@1"] (alias), summary["figures"]["retrieval_ranks"]
    run_eval(gm, dataset, out, EvalConfig(qrels="qrels.txt", trec_run="run.txt", measures=("RR@10",)))

Writes per_query.csv, correct_queries.csv (with provenance),
figures/retrieval_ranks.png (share of queries within rank r) and, when asked,
a TREC run file. Without a split, the test split when the data has one, else
the split it has; the summary's `split` says which.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..data.trec import read_trec_qrels
from ..provenance import provenance, write_table
from ..retrieval import DEFAULT_MEASURES, evaluate, rank_texts
from ..results_directory import atomic
from .inputs import config_record
from .rendering import draw


@dataclass
class EvalConfig:
    """Parameters of `run_eval`, each with its default; recorded in every table's provenance."""
    split: str | None = None  # None: test if the data has it, else the split it has
    batch_size: int = 256
    measures: tuple[str, ...] = DEFAULT_MEASURES  # ir_measures names (or the aliases hits@1, hits@5, hits@10, mrr)
    qrels: str | None = None  # a TREC qrels file replacing the data's judgements
    trec_run: str | None = None  # where to write the TREC run (not inside `out`: it is the user's file)
    run_depth: int = 100  # documents per query in the run measured and written


@atomic
def run_eval(model, data, out, config: EvalConfig | None = None) -> dict:
    """Retrieval evaluation of a checkpoint (module docstring: what it writes); returns a JSON-able summary.

        summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    """
    config = config or EvalConfig()
    started, out = time.time(), Path(out)
    if config.qrels:
        data = data.with_qrels(read_trec_qrels(config.qrels), str(config.qrels))
    split = data.resolve_split(config.split, ("test", "validation", "train"))
    if config.split is None and split != "test":
        warnings.warn(f"no test queries; evaluating split {split!r} (splits: {', '.join(data.splits)}; CLI: --split)", stacklevel=2)
    queries = data.split(split)
    ranking = rank_texts(model, [q.text for q in queries], [q.query_id for q in queries], config.batch_size)
    metrics, per_query = evaluate(model, data, split, config.batch_size, config.measures, ranking, config.run_depth)
    record = provenance(model=model.path, data=data, config=config_record(config), started=started, metrics=metrics)
    write_table(per_query, out / "per_query", record)
    correct = write_table(per_query[per_query.correct], out / "correct_queries", record)
    run = {"trec_run": str(ranking.write_trec_run(config.trec_run, config.run_depth, model.name))} if config.trec_run else {}
    figures = draw({"per_query": per_query}, out, None, model.name)
    return {**metrics, "correct_queries": str(correct), **run, "figures": figures}
