"""Read user corpora into a `RetrievalDataset`, and write ours to disk.

    ds = load_beir("path/to/nq10k")            # corpus.jsonl, queries.jsonl, qrels/*.tsv
    ds = load_dsi_jsonl("docs.jsonl", "queries.jsonl")   # DSI/NQ-style JSONL
    ds = load_dataset("synthetic:n_docs=1000,seed=0")     # or a path to either format

Every malformed line raises a `GenIRError` naming the file and line number.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import GenIRError
from .corpus import Query, RetrievalDataset
from .synthetic import SyntheticConfig, generate_corpus


def iter_jsonl(path: Path):
    """(line number, JSON object) for each non-blank line; a bad line raises a GenIRError naming file and line."""
    if not path.exists():
        raise GenIRError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GenIRError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise GenIRError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    rows = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise GenIRError(f"{path}, line {lineno}: missing field(s) {', '.join(missing)}")
        rows.append(row)
    return rows


def load_beir(root: str | Path, splits: tuple[str, ...] = ("train", "dev", "validation", "test")) -> RetrievalDataset:
    """Load a BEIR-format directory. The BEIR split `dev` becomes `validation`."""
    root = Path(root)
    docs = _read_jsonl(root / "corpus.jsonl", ("_id", "text"))
    documents = {str(d["_id"]): (d.get("title", "") + " " + d["text"]).strip() for d in docs}
    texts = {str(q["_id"]): q["text"] for q in _read_jsonl(root / "queries.jsonl", ("_id", "text"))}
    queries, qrels = [], {}
    qrel_dir = root / "qrels"
    if not qrel_dir.is_dir():
        raise GenIRError(f"{qrel_dir}: qrels directory not found")
    for split in splits:
        path = qrel_dir / f"{split}.tsv"
        if not path.exists():
            continue
        name = "validation" if split == "dev" else split
        with path.open(encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="\t")
            for lineno, row in enumerate(reader, start=1):
                if lineno == 1 and row and row[0] == "query-id":
                    continue
                if len(row) < 3:
                    raise GenIRError(f"{path}, line {lineno}: expected query-id, corpus-id, score")
                qid, did, score = row[0], row[1], row[2]
                try:
                    if int(float(score)) <= 0:
                        continue
                except ValueError:
                    raise GenIRError(f"{path}, line {lineno}: score {score!r} is not a number") from None
                if qid not in texts:
                    raise GenIRError(f"{path}, line {lineno}: query {qid!r} not in queries.jsonl")
                if did not in documents:
                    raise GenIRError(f"{path}, line {lineno}: document {did!r} not in corpus.jsonl")
                if qid not in qrels:
                    queries.append(Query(qid, texts[qid], name))
                qrels.setdefault(qid, set()).add(did)
    if not queries:
        raise GenIRError(f"{qrel_dir}: no judged queries in any of {', '.join(s + '.tsv' for s in splits)}")
    return RetrievalDataset(documents, queries, qrels, meta={"generator": "beir", "path": str(root)})


def load_dsi_jsonl(documents_path: str | Path, queries_path: str | Path) -> RetrievalDataset:
    """Load DSI-style JSONL.

    documents: one `{"doc_id": ..., "text": ...}` per line.
    queries:   one `{"query_id"?: ..., "text": ..., "doc_id": ..., "split"?: ...}` per line
    (the `{"text", "text_id"}` pairs of public DSI code are accepted too).
    """
    documents_path, queries_path = Path(documents_path), Path(queries_path)
    documents = {}
    for d in _read_jsonl(documents_path, ("text",)):
        key = d.get("doc_id", d.get("text_id"))
        if key is None:
            raise GenIRError(f"{documents_path}: a document lacks doc_id/text_id")
        documents[str(key)] = d["text"]
    queries, qrels = [], {}
    for i, q in enumerate(_read_jsonl(queries_path, ("text",)), start=1):
        did = q.get("doc_id", q.get("text_id"))
        if did is None:
            raise GenIRError(f"{queries_path}, line {i}: missing field doc_id (or text_id)")
        did = str(did)
        if did not in documents:
            raise GenIRError(f"{queries_path}, line {i}: unknown document {did!r}")
        qid = str(q.get("query_id", f"q{i}"))
        queries.append(Query(qid, q["text"], q.get("split", "test")))
        qrels[qid] = {did}
    return RetrievalDataset(documents, queries, qrels, meta={"generator": "dsi-jsonl", "path": str(queries_path)})


def parse_synthetic_spec(spec: str) -> SyntheticConfig:
    """`synthetic:n_docs=1000,seed=0` -> SyntheticConfig."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    kwargs = {}
    for part in filter(None, body.split(",")):
        key, _, value = part.partition("=")
        if key not in SyntheticConfig.__dataclass_fields__:
            raise GenIRError(f"data spec {spec!r}: unknown option {key!r}")
        try:
            kwargs[key] = int(value)
        except ValueError:
            raise GenIRError(f"data spec {spec!r}: {key} must be an integer, got {value!r}") from None
    return SyntheticConfig(**kwargs)


def load_dataset(spec: str | dict) -> RetrievalDataset:
    """Resolve a data spec: `synthetic:...`, a synthetic config dict, a BEIR dir, or a dir with DSI JSONL."""
    if isinstance(spec, dict):
        return generate_corpus(SyntheticConfig(**spec))
    if spec.startswith("synthetic"):
        return generate_corpus(parse_synthetic_spec(spec))
    path = Path(spec)
    if (path / "corpus.jsonl").exists():
        return load_beir(path)
    if (path / "documents.jsonl").exists():
        return load_dsi_jsonl(path / "documents.jsonl", path / "queries.jsonl")
    raise GenIRError(f"{spec}: not a data spec; expected 'synthetic:...', a BEIR directory (corpus.jsonl) or a directory with documents.jsonl + queries.jsonl")


def save_dsi_jsonl(ds: RetrievalDataset, root: str | Path) -> None:
    """Write `ds` as documents.jsonl + queries.jsonl (+ pairs.jsonl), readable by `load_dsi_jsonl`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with (root / "documents.jsonl").open("w") as fh:
        for did, text in ds.documents.items():
            fh.write(json.dumps({"doc_id": did, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as fh:
        for q in ds.queries:
            fh.write(json.dumps({"query_id": q.query_id, "text": q.text, "doc_id": ds.relevant(q.query_id), "split": q.split}) + "\n")
    if ds.pairs:
        with (root / "pairs.jsonl").open("w") as fh:
            for p in ds.pairs:
                fh.write(json.dumps(p) + "\n")
