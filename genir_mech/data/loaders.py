"""Read user corpora into a `RetrievalDataset`, and write ours to disk.

    ds = load_beir("path/to/nq10k")            # corpus.jsonl, queries.jsonl, qrels/*.tsv
    ds = load_dsi_jsonl("docs.jsonl", "queries.jsonl")   # DSI/NQ-style JSONL
    ds = load_dataset("synthetic:n_docs=1000,seed=0")     # or a path to either format
    ds = load_dataset("ir_datasets:msmarco-passage/dev/small")   # the ir_datasets catalogue (data.ir_datasets_source)

Every malformed line raises a `GenIRError` naming the file and line number:
bad JSON or UTF-8, a missing field, a query text that is empty or not a
string, and a query id given twice (which would silently replace the first
query's relevant document).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from ..errors import GenIRError
from .corpus import Query, RetrievalDataset
from .ir_datasets_source import PREFIX as IR_DATASETS_PREFIX, load_ir_dataset
from .synthetic import SyntheticConfig, generate_corpus


def _not_utf8(path: Path, lineno: int, raw: bytes, start: int) -> GenIRError:
    return GenIRError(f"{path}, line {lineno}: not valid UTF-8 (byte 0x{raw[start]:02x} at column {start + 1}); "
                      "text files must be UTF-8: save it with that encoding")


def iter_lines(path: Path):
    """(line number, decoded text) of each line; bytes that are not UTF-8 raise a GenIRError naming file and line."""
    if not path.exists():
        raise GenIRError(f"{path}: file not found")
    # read bytes and decode per line: a UnicodeDecodeError from a text-mode file names neither file nor line
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(path, lineno, raw, exc.start) from None


def read_utf8(path: str | Path) -> str:
    """The whole text of a user file (configs, intervention and stage files, pairs, model cards), decoded as UTF-8.

    Text in another encoding (latin-1, cp1252) raises a GenIRError naming the file and line and saying the file
    must be UTF-8, where `Path.read_text` would raise a UnicodeDecodeError naming neither (or, under a non-UTF-8
    locale, decode it silently as something else).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        raise _not_utf8(path, data.count(b"\n", 0, exc.start) + 1, data[line_start:], exc.start - line_start) from None


def iter_jsonl(path: Path):
    """(line number, JSON object) for each non-blank line; a bad line raises a GenIRError naming file and line."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GenIRError(f"{path}, line {lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise GenIRError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _read_jsonl(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    rows = []
    for lineno, row in iter_jsonl(path):
        missing = [k for k in required if k not in row]
        if missing:
            raise GenIRError(f"{path}, line {lineno}: missing field(s) {', '.join(missing)}")
        rows.append((lineno, row))
    return rows


def _text(path: Path, lineno: int, row: dict, key: str = "text", what: str = "query text", allow_empty: bool = False) -> str:
    """row[key] as a string; a non-string, or (unless allowed) an empty or whitespace-only text, names file and line."""
    value = row[key]
    if not isinstance(value, str):
        raise GenIRError(f"{path}, line {lineno}: {what} must be a string, got {type(value).__name__} {value!r}")
    if not allow_empty and not value.strip():
        # an empty query is still ranked (on the start token alone) and would count as a real result
        raise GenIRError(f"{path}, line {lineno}: {what} is empty")
    return value


def integer_grade(value, where: str, hint: str = "") -> int:
    """A relevance grade: an integer (`2`, `"2"`, or a whole number such as `2.0`); anything else raises a GenIRError at `where`.

    A fractional grade is refused rather than truncated (0.7 would become 0, judged not relevant, and drop
    the query); so are inf, NaN, booleans and non-numbers.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise GenIRError(f"{where} {value!r} is not an integer; relevance grades are integers (0: not relevant, 1, 2, ...: relevant){hint}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    try:
        number = float(value)
    except ValueError:
        raise GenIRError(f"{where} {value!r} is not a number; relevance grades are integers (0: not relevant, 1, 2, ...: relevant){hint}") from None
    if not math.isfinite(number) or not number.is_integer():
        why = "fractional grades are not rounded" if math.isfinite(number) else "not a finite number"
        raise GenIRError(f"{where} {value!r} is not an integer; relevance grades are integers (0: not relevant, 1, 2, ...: relevant; {why})")
    return int(number)


def load_beir(root: str | Path, splits: tuple[str, ...] = ("train", "dev", "validation", "test")) -> RetrievalDataset:
    """Load a BEIR-format directory. The BEIR split `dev` becomes `validation`.

    Every judgement is kept with its grade (score); a query is loaded when at
    least one document is relevant to it (score > 0). Each qrels/<split>.tsv line
    has exactly three tab-separated columns, query-id, corpus-id and an integer
    score, after an optional header row `query-id corpus-id score`; a line with
    more or fewer columns, or a fractional, infinite or non-numeric score, is
    refused naming the file and line.
    """
    root = Path(root)
    corpus_path, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    documents = {}
    for lineno, d in _read_jsonl(corpus_path, ("_id", "text")):
        title = _text(corpus_path, lineno, d, "title", "document title", allow_empty=True) if "title" in d else ""
        documents[str(d["_id"])] = (title + " " + _text(corpus_path, lineno, d, what="document text", allow_empty=True)).strip()
    texts, first_line = {}, {}
    for lineno, q in _read_jsonl(queries_path, ("_id", "text")):
        qid, text = str(q["_id"]), _text(queries_path, lineno, q)
        if qid in texts and texts[qid] != text:
            # the second text would silently replace the first; a repeated identical line changes nothing
            raise GenIRError(f"{queries_path}, line {lineno}: query id {qid!r} already given on line {first_line[qid]} with another text; "
                             "query ids must be unique")
        texts[qid] = text
        first_line.setdefault(qid, lineno)
    queries, qrels, split_of, judged_not_relevant = [], {}, {}, []
    qrel_dir = root / "qrels"
    if not qrel_dir.is_dir():
        raise GenIRError(f"{qrel_dir}: qrels directory not found")
    for split in splits:
        path = qrel_dir / f"{split}.tsv"
        if not path.exists():
            continue
        name = "validation" if split == "dev" else split
        for lineno, line in iter_lines(path):
            row = next(csv.reader([line.rstrip("\r\n")], delimiter="\t"), [])
            if len(row) != 3:
                # a fourth column would be ignored silently (a grade in the wrong column, a TREC line with its iteration)
                raise GenIRError(f"{path}, line {lineno}: expected 3 tab-separated columns (query-id, corpus-id, score), got {len(row)}")
            if lineno == 1 and row[0] == "query-id":
                continue
            qid, did, score = row
            grade = integer_grade(score, f"{path}, line {lineno}: score",
                                  " (a header row must read query-id, corpus-id, score)" if lineno == 1 else "")
            if grade <= 0:
                judged_not_relevant.append((qid, did, grade))
                continue
            if qid not in texts:
                raise GenIRError(f"{path}, line {lineno}: query {qid!r} not in queries.jsonl")
            if did not in documents:
                raise GenIRError(f"{path}, line {lineno}: document {did!r} not in corpus.jsonl")
            if qid in split_of and split_of[qid][0] != name:
                # one query in two splits would be scored in both, and in one against the other's documents
                first_name, first_path, first_line = split_of[qid]
                raise GenIRError(f"{path}, line {lineno}: query {qid!r} is already judged in split {first_name} ({first_path}, line {first_line})")
            if qid not in qrels:
                queries.append(Query(qid, texts[qid], name))
                split_of[qid] = (name, path, lineno)
            qrels.setdefault(qid, {})[did] = grade
    for qid, did, grade in judged_not_relevant:
        # kept for the graded metrics (nDCG's judged documents); a query judged only non-relevant has nothing to find
        if qid in qrels:
            qrels[qid].setdefault(did, grade)
    if not queries:
        raise GenIRError(f"{qrel_dir}: no judged queries in any of {', '.join(s + '.tsv' for s in splits)}")
    return RetrievalDataset(documents, queries, qrels, meta={"generator": "beir", "path": str(root)})


PAIR_FIELDS = ("clean", "corrupted", "clean_doc", "corrupted_doc")


def load_dsi_jsonl(documents_path: str | Path, queries_path: str | Path, pairs_path: str | Path | None = None) -> RetrievalDataset:
    """Load DSI-style JSONL.

    documents: one `{"doc_id": ..., "text": ...}` per line.
    queries:   one `{"query_id"?: ..., "text": ..., "doc_id": ..., "split"?: ...}` per line
    (the `{"text", "text_id"}` pairs of public DSI code are accepted too); a query with several or graded
    relevant documents gives `"relevance": {doc_id: grade, ...}` instead of `doc_id` (grade 0: judged not relevant).
    pairs:     one `{"pair_id"?, "clean", "corrupted", "clean_doc", "corrupted_doc", ...}` per line; by default
    the pairs.jsonl beside queries_path when there is one (what `save_dsi_jsonl` writes), so a round trip keeps them.
    """
    documents_path, queries_path = Path(documents_path), Path(queries_path)
    documents = {}
    for lineno, d in _read_jsonl(documents_path, ("text",)):
        key = d.get("doc_id", d.get("text_id"))
        if key is None:
            raise GenIRError(f"{documents_path}, line {lineno}: missing field doc_id (or text_id)")
        documents[str(key)] = _text(documents_path, lineno, d, what="document text", allow_empty=True)
    queries, qrels, seen = [], {}, {}  # seen: query id -> (split, document(s), line)
    for lineno, q in _read_jsonl(queries_path, ("text",)):
        judged = _judgements(queries_path, lineno, q, documents)
        did = ", ".join(sorted(judged)) if len(judged) > 1 else next(iter(judged))
        qid, split = str(q.get("query_id", f"q{lineno}")), str(q.get("split", "test"))
        if qid in seen:
            # One id in one split would be scored twice (ir_measures keeps one, the vocabulary path both), and one id
            # with another document would silently replace the first query's judgement. The same id in another split
            # with the same document is how the synthetic generator names train and test queries (t<doc>-<template>):
            # each split is evaluated on its own, so that stays allowed.
            first_split, first_doc, first_line = seen[qid]
            if first_split == split or qrels[qid] != judged:
                why = f"in the same split {split!r}" if first_split == split else f"with document {first_doc!r}, here {did!r}"
                raise GenIRError(f"{queries_path}, line {lineno}: query id {qid!r} already given on line {first_line} ({why}); query ids must be unique")
        seen.setdefault(qid, (split, did, lineno))
        queries.append(Query(qid, _text(queries_path, lineno, q), split))
        qrels[qid] = judged
    if pairs_path is None and (queries_path.parent / "pairs.jsonl").exists():
        pairs_path = queries_path.parent / "pairs.jsonl"
    pairs = _read_pairs(Path(pairs_path), documents) if pairs_path is not None else []
    return RetrievalDataset(documents, queries, qrels, pairs, meta={"generator": "dsi-jsonl", "path": str(queries_path)})


def _judgements(path: Path, lineno: int, row: dict, documents: dict[str, str]) -> dict[str, int]:
    """{doc: grade} of one query line: `doc_id` (or `text_id`) with grade 1, or a `relevance` object of graded documents."""
    if "relevance" in row:
        rel = row["relevance"]
        if not isinstance(rel, dict) or not rel:
            raise GenIRError(f"{path}, line {lineno}: relevance must be a non-empty object {{doc_id: grade}}")
        judged = {str(d): integer_grade(g, f"{path}, line {lineno}: relevance grade of document {d!r}:") for d, g in rel.items()}
        if not any(g > 0 for g in judged.values()):
            raise GenIRError(f"{path}, line {lineno}: relevance names no relevant document (grade > 0)")
    else:
        did = row.get("doc_id", row.get("text_id"))
        if did is None:
            raise GenIRError(f"{path}, line {lineno}: missing field doc_id (or text_id, or relevance)")
        judged = {str(did): 1}
    unknown = [d for d in judged if d not in documents]
    if unknown:
        raise GenIRError(f"{path}, line {lineno}: unknown document {unknown[0]!r}")
    return judged


def _read_pairs(path: Path, documents: dict[str, str]) -> list[dict]:
    """Matched clean/corrupted pairs as `save_dsi_jsonl` writes them, each text a non-empty string and each document known."""
    pairs = []
    for lineno, row in _read_jsonl(path, PAIR_FIELDS):
        for key in ("clean", "corrupted"):
            _text(path, lineno, row, key, f"{key} query text")
        for key in ("clean_doc", "corrupted_doc"):
            row[key] = str(row[key])
            if row[key] not in documents:
                raise GenIRError(f"{path}, line {lineno}: {key} {row[key]!r} is not a document of the corpus")
        pairs.append({"pair_id": str(row.get("pair_id", f"p{len(pairs)}")), **row})
    return pairs


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
    config = SyntheticConfig(**kwargs)
    try:
        config.validate()  # bounds too: a spec in a model card or a sweep config is checked before anything is generated
    except GenIRError as exc:
        raise GenIRError(f"data spec {spec!r}: {exc}") from None
    return config


def load_dataset(spec: str | dict) -> RetrievalDataset:
    """Resolve a data spec: `synthetic:...`, `ir_datasets:<id>`, a synthetic config dict, a BEIR dir, or a dir with DSI JSONL."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(SyntheticConfig.__dataclass_fields__))
        if unknown:
            raise GenIRError(f"synthetic data config {spec!r}: unknown option {unknown[0]!r}")
        return generate_corpus(SyntheticConfig(**spec))
    if spec.startswith("synthetic"):
        return generate_corpus(parse_synthetic_spec(spec))
    if spec.startswith(IR_DATASETS_PREFIX):
        return load_ir_dataset(spec[len(IR_DATASETS_PREFIX):])
    path = Path(spec)
    if (path / "corpus.jsonl").exists():
        return load_beir(path)
    if (path / "documents.jsonl").exists():
        return load_dsi_jsonl(path / "documents.jsonl", path / "queries.jsonl")
    raise GenIRError(f"{spec}: not a data spec; expected 'synthetic:...', 'ir_datasets:<id>', a BEIR directory (corpus.jsonl) or a directory with documents.jsonl + queries.jsonl")


def save_dsi_jsonl(ds: RetrievalDataset, root: str | Path) -> None:
    """Write `ds` as documents.jsonl + queries.jsonl (+ pairs.jsonl), readable by `load_dsi_jsonl`.

    Every file is written to a temporary file and moved into place only once all of them are complete, so a
    full disk or a kill leaves no truncated file (the folder keeps what it held before; a full disk is one
    GenIRError line naming the file). A pairs.jsonl left by an earlier dataset without pairs is removed.
    """
    from contextlib import ExitStack

    from ..provenance import written_atomically
    from ..results_directory import write_error

    root = Path(root)
    created = not root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        error = write_error(exc, root)
        if error is None:
            raise
        raise error from None
    def queries():
        for q in ds.queries:
            judged = ds.grades[q.query_id]
            target = {"doc_id": next(iter(judged))} if list(judged.values()) == [1] else {"relevance": judged}
            yield {"query_id": q.query_id, "text": q.text, **target, "split": q.split}

    files = {"documents.jsonl": ({"doc_id": did, "text": text} for did, text in ds.documents.items()), "queries.jsonl": queries(),
             **({"pairs.jsonl": iter(ds.pairs)} if ds.pairs else {})}
    try:
        with ExitStack() as stack:  # the files are renamed into place when every one is written (in reverse order)
            tmp = {name: stack.enter_context(written_atomically(root / name)) for name in files}
            for name, rows in files.items():
                try:
                    with tmp[name].open("w", encoding="utf-8") as fh:
                        for row in rows:
                            fh.write(json.dumps(row) + "\n")
                except OSError as exc:  # a full disk: one line naming the file being written
                    error = write_error(exc, root / name, (tmp[name],))
                    if error is None:
                        raise
                    raise error from None
    except BaseException:
        if created and not any(root.iterdir()):
            root.rmdir()  # the folder this call made, left empty: as if nothing had happened
        raise
    if not ds.pairs:
        (root / "pairs.jsonl").unlink(missing_ok=True)  # load_dsi_jsonl would read another dataset's pairs beside these queries
