"""The in-memory retrieval dataset every part of genir_mech reads.

A `RetrievalDataset` holds documents, queries grouped by split, and relevance
judgements (qrels). Generators and loaders produce it; training, evaluation and
analyses consume it. `data_hash` is the one fingerprint written into every
provenance record.

Judgements may be binary (a set of relevant documents per query, what the
synthetic data and DSI JSONL give) or graded (document -> grade, what BEIR,
TREC qrels and ir_datasets give; grade 0 means judged not relevant). `qrels`
always holds the relevant documents (grade > 0) and `grades` every judgement;
metrics read `grades` through ir_measures, so every relevant document counts
with its grade.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import GenIRError


@dataclass(frozen=True)
class Query:
    """One query of a retrieval dataset: its id, text, split and (synthetic data) the template it came from."""
    query_id: str
    text: str
    split: str  # "train", "validation" or "test"
    template: str = ""


@dataclass
class RetrievalDataset:
    """Documents, split queries, qrels and matched clean/corrupted pairs: what every part of genir_mech reads.

    ds = load_dataset("synthetic:n_docs=1000,seed=0")
    ds.split("validation"), ds.relevant("v17-0"), ds.data_hash()
    ds = RetrievalDataset(docs, queries, {"q1": {"d1": 2, "d2": 1, "d3": 0}})   # graded: ds.qrels["q1"] == {"d1", "d2"}

    `qrels` may be given as query -> set of relevant documents (grade 1 each) or
    query -> {document: grade}; after construction `qrels` is query -> set of
    relevant documents (grade > 0) and `grades` query -> {document: grade} with
    every judgement, grade 0 included.
    """
    documents: dict[str, str]
    queries: list[Query]
    qrels: dict[str, set[str]]
    pairs: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    grades: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self):
        grades = {q: dict(g) for q, g in self.grades.items()}
        for qid, judged in self.qrels.items():
            given = grades.setdefault(qid, {})
            if isinstance(judged, Mapping):
                given.update({str(d): int(g) for d, g in judged.items()})
            else:
                for d in judged:
                    given.setdefault(str(d), 1)
        self.grades = grades
        self.qrels = {q: {d for d, g in g_.items() if g > 0} for q, g_ in grades.items()}
        self.qrels = {q: docs for q, docs in self.qrels.items() if docs}

    def split(self, name: str) -> list[Query]:
        """The queries of one split, in dataset order."""
        return [q for q in self.queries if q.split == name]

    @property
    def splits(self) -> list[str]:
        """Names of the splits that have queries."""
        return sorted({q.split for q in self.queries})

    def relevant(self, query_id: str) -> str:
        """The single relevant document of a query with exactly one (synthetic and DSI data); GenIRError otherwise.

        A query with several relevant documents has no single answer: metrics use
        `relevant_docs`/`grades`, and analyses follow the relevant document the
        model ranks first (`retrieval.correct_query_targets`).
        """
        docs = self.qrels.get(query_id)
        if not docs:
            raise GenIRError(f"query {query_id!r} has no relevant document in the qrels")
        if len(docs) > 1:
            raise GenIRError(f"query {query_id!r} has {len(docs)} relevant documents ({', '.join(sorted(docs)[:5])}{', ...' if len(docs) > 5 else ''}); "
                             "this step needs one per query (metrics and analyses use them all)")
        return next(iter(docs))

    def relevant_docs(self, query_id: str) -> dict[str, int]:
        """The relevant documents of a query (grade > 0) with their grades; GenIRError if it has none."""
        docs = {d: g for d, g in self.grades.get(query_id, {}).items() if g > 0}
        if not docs:
            raise GenIRError(f"query {query_id!r} has no relevant document in the qrels")
        return docs

    @property
    def is_graded(self) -> bool:
        """True when some judgement is not plain 'relevant' (grade 1): several grades, or judged-non-relevant documents."""
        return any(g != 1 for judged in self.grades.values() for g in judged.values())

    def with_qrels(self, grades: dict[str, dict[str, int]], source: str = "") -> "RetrievalDataset":
        """A copy whose judgements are `grades` (e.g. a TREC qrels file); its queries are those with a relevant document in them."""
        unknown = sorted(set(grades) - {q.query_id for q in self.queries})
        if unknown:
            raise GenIRError(f"{source or 'qrels'}: query {unknown[0]!r} is not a query of the data ({len(unknown)} unknown in all)")
        absent = sorted({d for judged in grades.values() for d in judged} - set(self.documents))
        if absent:
            raise GenIRError(f"{source or 'qrels'}: document {absent[0]!r} is not in the corpus ({len(absent)} unknown in all)")
        # a query judged only non-relevant has nothing to find: left out, as the loaders leave it out
        judged = [q for q in self.queries if any(g > 0 for g in grades.get(q.query_id, {}).values())]
        if not judged:
            raise GenIRError(f"{source or 'qrels'}: no query has a relevant document (grade > 0)")
        return RetrievalDataset(self.documents, judged, dict(grades), self.pairs, {**self.meta, "qrels": source})

    def resolve_split(self, split: str | None, preferred: tuple[str, ...] = ("validation", "test", "train")) -> str:
        """The split to use: `split` when given (GenIRError if it has no queries), else the first of `preferred` that has
        queries, else the first split there is. A BEIR set with only `test` thus runs without naming its split."""
        splits = self.splits
        if split is not None:
            if split not in splits:
                raise GenIRError(f"empty query set: split {split!r} has no queries (splits: {', '.join(splits) or 'none'})")
            return split
        if not splits:
            raise GenIRError("empty query set: the data has no queries")
        return next((s for s in preferred if s in splits), splits[0])

    def query(self, query_id: str) -> Query:
        """The query with this id (GenIRError if unknown)."""
        for q in self.queries:
            if q.query_id == query_id:
                return q
        raise GenIRError(f"unknown query id {query_id!r}")

    def data_hash(self) -> str:
        """Content hash of documents, queries and qrels (order-independent)."""
        payload = {
            "documents": sorted(self.documents.items()),
            "queries": sorted((q.query_id, q.text, q.split) for q in self.queries),
            "qrels": sorted((k, sorted(v)) for k, v in self.qrels.items()),
        }
        if self.is_graded:
            # only then: binary data keeps the hash it had before grades were stored (model cards record it)
            payload["grades"] = sorted((k, sorted(v.items())) for k, v in self.grades.items())
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    def without_documents(self, doc_ids: set[str]) -> "RetrievalDataset":
        """A copy that never mentions `doc_ids` (documents, their queries, their qrels)."""
        keep = [q for q in self.queries if not (self.qrels.get(q.query_id, set()) & doc_ids)]
        keep_ids = {q.query_id for q in keep}
        return RetrievalDataset(
            documents={d: t for d, t in self.documents.items() if d not in doc_ids},
            queries=keep,
            qrels={k: v for k, v in self.grades.items() if k in keep_ids},
            pairs=[p for p in self.pairs if p["clean_doc"] not in doc_ids and p["corrupted_doc"] not in doc_ids],
            meta={**self.meta, "removed_documents": sorted(doc_ids)},
        )
