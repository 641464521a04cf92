"""TREC qrels files: `query-id iteration doc-id relevance` per line, as trec_eval, ir_measures and ir_datasets write them.

    grades = read_trec_qrels("qrels.dev.txt")          # {query id: {doc id: grade}}, grade 0 = judged not relevant
    dataset = dataset.with_qrels(grades, "qrels.dev.txt")

(TREC run files are written by `retrieval.Ranking.write_trec_run`.) A bad
line raises a GenIRError naming the file and line.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GenIRError
from .loaders import iter_lines


def read_trec_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Query id -> {document id: grade} of a TREC qrels file (whitespace-separated, 4 columns; blank lines skipped)."""
    path = Path(path)
    grades: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 4:
            raise GenIRError(f"{path}, line {lineno}: expected 4 columns (query-id iteration doc-id relevance), got {len(parts)}")
        qid, _, did, grade = parts
        try:
            value = int(grade)
        except ValueError:
            raise GenIRError(f"{path}, line {lineno}: relevance {grade!r} is not an integer") from None
        grades.setdefault(qid, {})[did] = value
    if not grades:
        raise GenIRError(f"{path}: no judgements")
    return grades
