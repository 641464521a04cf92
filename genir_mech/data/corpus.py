"""The in-memory retrieval dataset every part of genir_mech reads.

A `RetrievalDataset` holds documents, queries grouped by split, and relevance
judgements (qrels). Generators and loaders produce it; training, evaluation and
analyses consume it. `data_hash` is the one fingerprint written into every
provenance record.
"""
from __future__ import annotations

import hashlib
import json
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
    """
    documents: dict[str, str]
    queries: list[Query]
    qrels: dict[str, set[str]]
    pairs: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def split(self, name: str) -> list[Query]:
        """The queries of one split, in dataset order."""
        return [q for q in self.queries if q.split == name]

    @property
    def splits(self) -> list[str]:
        """Names of the splits that have queries."""
        return sorted({q.split for q in self.queries})

    def relevant(self, query_id: str) -> str:
        """The single relevant document of a query (atomic-docid retrieval has one)."""
        docs = self.qrels.get(query_id)
        if not docs:
            raise GenIRError(f"query {query_id!r} has no relevant document in the qrels")
        return sorted(docs)[0]

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
        return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]

    def without_documents(self, doc_ids: set[str]) -> "RetrievalDataset":
        """A copy that never mentions `doc_ids` (documents, their queries, their qrels)."""
        keep = [q for q in self.queries if not (self.qrels.get(q.query_id, set()) & doc_ids)]
        keep_ids = {q.query_id for q in keep}
        return RetrievalDataset(
            documents={d: t for d, t in self.documents.items() if d not in doc_ids},
            queries=keep,
            qrels={k: v for k, v in self.qrels.items() if k in keep_ids},
            pairs=[p for p in self.pairs if p["clean_doc"] not in doc_ids and p["corrupted_doc"] not in doc_ids],
            meta={**self.meta, "removed_documents": sorted(doc_ids)},
        )
