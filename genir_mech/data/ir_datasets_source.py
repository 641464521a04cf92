"""Datasets of the ir_datasets catalogue (https://ir-datasets.com) as a `RetrievalDataset`: its documents, queries and graded qrels.

    ds = load_ir_dataset("msmarco-passage/dev/small")         # what `--data ir_datasets:msmarco-passage/dev/small` loads
    ds = load_ir_dataset("my-local/test")                       # any id registered with ir_datasets.registry, e.g. from local files

An ir_datasets id names one query set, so the dataset has one split, named
after the id (`.../dev/...` -> validation, `.../train...` -> train, otherwise
test); the analysis verbs default to the split that exists. Documents and
queries are read with `default_text()`; every judgement keeps its grade, and a
query is kept when at least one document is relevant to it (grade > 0), as for
BEIR directories. ir_datasets is imported only here, when such data is asked for.
"""
from __future__ import annotations

from ..errors import GenIRError
from .corpus import Query, RetrievalDataset

PREFIX = "ir_datasets:"
SPLIT_WORDS = {"train": "train", "dev": "validation", "valid": "validation", "validation": "validation", "test": "test", "eval": "test"}


def split_of_id(dataset_id: str) -> str:
    """The split an ir_datasets id names: its last component that is a split word (dev -> validation), else test."""
    for part in reversed(dataset_id.split("/")):
        if part.lower() in SPLIT_WORDS:
            return SPLIT_WORDS[part.lower()]
    return "test"


def _library():
    try:
        import ir_datasets
    except ImportError:
        raise GenIRError("ir_datasets is not installed: pip install ir_datasets") from None
    return ir_datasets


def load_ir_dataset(dataset_id: str, progress: bool = True) -> RetrievalDataset:
    """Documents, queries and graded qrels of ir_datasets dataset `dataset_id` (module docstring: splits and filtering)."""
    from tqdm.auto import tqdm

    if not dataset_id:
        raise GenIRError(f"data spec {PREFIX!r} names no dataset; e.g. {PREFIX}msmarco-passage/dev/small")
    irds = _library()
    try:
        ds = irds.load(dataset_id)
    except KeyError:
        raise GenIRError(f"{PREFIX}{dataset_id}: not a dataset id ir_datasets knows (see https://ir-datasets.com, or register a local one)") from None
    missing = [what for what, has in (("documents", ds.has_docs()), ("queries", ds.has_queries()), ("qrels", ds.has_qrels())) if not has]
    if missing:
        raise GenIRError(f"{PREFIX}{dataset_id}: has no {' or '.join(missing)}; give an id of one query set with judgements, e.g. msmarco-passage/dev/small")
    try:
        count = ds.docs_count()
    except Exception:  # noqa: BLE001 - a count is only a progress hint; some datasets cannot give one before reading
        count = None
    documents = {str(d.doc_id): d.default_text() for d in tqdm(ds.docs_iter(), total=count, desc=f"{dataset_id}: documents", disable=not progress, unit="doc")}
    texts = {str(q.query_id): q.default_text() for q in ds.queries_iter()}
    grades: dict[str, dict[str, int]] = {}
    for qrel in ds.qrels_iter():
        qid, did = str(qrel.query_id), str(qrel.doc_id)
        if qid not in texts:
            raise GenIRError(f"{PREFIX}{dataset_id}: qrels judge query {qid!r}, which is not among its queries")
        if did not in documents:
            raise GenIRError(f"{PREFIX}{dataset_id}: qrels judge document {did!r}, which is not in its corpus")
        grades.setdefault(qid, {})[did] = int(qrel.relevance)
    split = split_of_id(dataset_id)
    queries = [Query(qid, text, split) for qid, text in texts.items() if any(g > 0 for g in grades.get(qid, {}).values())]
    if not queries:
        raise GenIRError(f"{PREFIX}{dataset_id}: no query has a relevant document in its qrels")
    empty = [q.query_id for q in queries if not q.text.strip()]
    if empty:
        raise GenIRError(f"{PREFIX}{dataset_id}: query {empty[0]!r} has an empty text ({len(empty)} in all)")
    keep = {q.query_id for q in queries}
    return RetrievalDataset(documents, queries, {q: g for q, g in grades.items() if q in keep},
                            meta={"generator": "ir_datasets", "id": dataset_id})
