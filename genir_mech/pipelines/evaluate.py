"""Retrieval evaluation of a checkpoint: ir_measures metrics on the full graded qrels, per-query ranks, the correct-query list, a rank curve.

    from genir_mech.pipelines.evaluate import EvalConfig, run_eval
    summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    summary["Success@1"], summary["nDCG@10"], summary["hits@1"] (alias), summary["figures"]["retrieval_ranks"]
    run_eval(gm, dataset, out, EvalConfig(qrels="qrels.txt", trec_run="run.txt", measures=("RR@10",)))

Both rankers are reported: the exact ranking (every document's score, or for
multi-token docids the exact top run_depth plus every document up to the
relevant ones, which is all the metrics read) and prefix-constrained beam
search (`beam:<measure>`, `beam_misses_exact_top1`, per_query_beam.csv).

Writes per_query.csv, correct_queries.csv (with provenance),
figures/retrieval_ranks.png (share of queries within rank r) and, when asked,
a TREC run file. Without a split, the test split when the data has one, else
the split it has; the summary's `split` says which.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..data.corpus import RetrievalDataset
from ..data.trec import read_trec_qrels
from ..errors import GenIRError
from ..provenance import provenance, write_table
from ..retrieval import DEFAULT_MEASURES, evaluate, rank_texts
from ..retrieval.evaluation import readable_queries
from ..results_directory import atomic, staged
from .inputs import config_record
from .rendering import draw


@dataclass
class EvalConfig:
    """Parameters of `run_eval`, each with its default; recorded in every table's provenance."""
    split: str | None = None  # None: test if the data has it, else the split it has
    batch_size: int = 256
    measures: tuple[str, ...] = DEFAULT_MEASURES  # ir_measures names (or the aliases hits@1, hits@5, hits@10, mrr)
    qrels: str | None = None  # a TREC qrels file replacing the data's judgements
    trec_run: str | None = None  # where to write the TREC run: inside `out` (published with the run) or anywhere else
    overwrite_trec_run: bool = False  # replace an existing trec_run file outside `out` (otherwise it is kept and the run refused)
    run_depth: int = 100  # documents per query in the run measured and written
    beams: int = 10  # prefix-constrained beam search, reported next to the exact ranking (0: exact only)
    full_ranking: bool = False  # multi-token docids: score every document, not only the exact top run_depth and the relevant ones
    max_queries: int | None = None  # evaluate only the first N queries of the split (None: all)


def trec_run_target(path: str | Path, overwrite: bool) -> Path:
    """Where the TREC run goes: inside the run's `out`, its place in the staging folder (published with the tables);
    elsewhere, `path` itself, which must be writable and, unless `overwrite`, must not exist yet."""
    target = staged(path)
    if target != Path(path):
        return target
    path = Path(path)
    if path.is_dir():
        raise GenIRError(f"{path}: is a folder; --trec-run names a file")
    if path.exists() and not overwrite:
        raise GenIRError(f"{path}: exists and is kept; name another file, or replace it with --overwrite-trec-run (sweep: overwrite_trec_run: true)")
    folder = path.resolve().parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise GenIRError(f"{path}: cannot be written here ({folder} is not writable)")
    return path


def beam_summary(exact, beam, beam_metrics: dict, beams: int) -> dict:
    """Beam search's metrics (keys `beam:<measure>`) and how often its first document is not the exact ranking's first."""
    summary = {f"beam:{k}": v for k, v in beam_metrics.items() if isinstance(v, float)}
    exact_top, beam_top = exact.doc_scores.argmax(dim=1), beam.doc_scores.argmax(dim=1)
    summary["beams"] = beams
    summary["beam_misses_exact_top1"] = float((exact_top != beam_top).float().mean())
    return summary


@atomic
def run_eval(model, data, out, config: EvalConfig | None = None) -> dict:
    """Retrieval evaluation of a checkpoint (module docstring: what it writes); returns a JSON-able summary.

        summary = run_eval(gm, dataset, "runs/eval/dsi-synth", EvalConfig(split="test"))
    """
    config = config or EvalConfig()
    started, out = time.time(), Path(out)
    trec_run = trec_run_target(config.trec_run, config.overwrite_trec_run) if config.trec_run else None  # refused before any ranking
    if config.qrels:
        data = data.with_qrels(read_trec_qrels(config.qrels), str(config.qrels))
    split = data.resolve_split(config.split, ("test", "validation", "train"))
    if config.split is None and split != "test":
        warnings.warn(f"no test queries; evaluating split {split!r} (splits: {', '.join(data.splits)}; CLI: --split)", stacklevel=2)
    readable = readable_queries(model, data.split(split), split)  # a query the model cannot read: left out, with a warning
    if config.max_queries is not None and config.max_queries < len(readable):
        readable = readable[: config.max_queries]
    if len(readable) < len(data.split(split)):
        kept = {q.query_id for q in readable}
        data = RetrievalDataset(data.documents, [q for q in data.queries if q.split != split or q.query_id in kept], data.grades, meta=data.meta)
    queries = data.split(split)
    texts, ids = [q.text for q in queries], [q.query_id for q in queries]
    must = None if config.full_ranking else [sorted(data.relevant_docs(i)) for i in ids]
    ranking = rank_texts(model, texts, ids, config.batch_size, "exact", depth=None if config.full_ranking else config.run_depth, must_score=must)
    metrics, per_query = evaluate(model, data, split, config.batch_size, config.measures, ranking, config.run_depth)
    tables = {"per_query": per_query}
    if config.beams:
        beam = rank_texts(model, texts, ids, config.batch_size, "beam", config.beams)
        beam_metrics, tables["per_query_beam"] = evaluate(model, data, split, config.batch_size, config.measures, beam, config.run_depth)
        metrics.update(beam_summary(ranking, beam, beam_metrics, config.beams))
    record = provenance(model=model.path, data=data, config=config_record(config), started=started, metrics=metrics)
    for name, table in tables.items():
        write_table(table, out / name, record)
    correct = write_table(per_query[per_query.correct], out / "correct_queries", record)
    run = {"trec_run": str(ranking.write_trec_run(trec_run, config.run_depth, model.name))} if trec_run else {}
    figures = draw({"per_query": per_query}, out, None, model.name)
    return {**metrics, "correct_queries": str(correct), **run, "figures": figures}
