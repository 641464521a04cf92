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

import itertools
import logging
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

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


class _BufferedLog(logging.Handler):
    """Holds ir_datasets' log records (data usage notes, "download failed, retrying" lines) until the data has loaded."""

    def __init__(self, handlers: list[logging.Handler]):
        super().__init__()
        self.handlers, self.records = handlers, []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        for record in self.records:
            for handler in self.handlers:
                handler.handle(record)
        self.records = []


@contextmanager
def _library_log(irds):
    """ir_datasets' log lines are shown once its files have been read; after a failed download, one error line says it all."""
    logger = irds.log.easy().logger()  # the "ir_datasets" logger, with ir_datasets' own handler attached
    handlers = list(logger.handlers)
    buffered = _BufferedLog(handlers)
    logger.handlers = [buffered]
    try:
        yield buffered
    finally:
        logger.handlers = handlers


def _download_failure(exc: BaseException, name: str, irds) -> str | None:
    """The one-line error for an ir_datasets download that failed (no network, a server down, a file to obtain by hand); None for other errors."""
    import requests

    home = irds.util.home_path()
    all_failed = isinstance(exc, RuntimeError) and bool(exc.args) and exc.args[0] == "All download sources failed"
    if all_failed:
        # ir_datasets tried each source (a local copy, the original server, its mirror); the last one says most
        tried = [e for _, e in (exc.args[1] if len(exc.args) > 1 else []) if not isinstance(e, FileNotFoundError)]
        exc = tried[-1] if tried else exc
    if isinstance(exc, FileNotFoundError) and exc.errno is None and exc.args and isinstance(exc.args[0], Path):
        # a file ir_datasets does not download itself (licensed collections): it must be placed there by hand
        return (f"{name}: the dataset's files are not in the ir_datasets cache ({home}) and ir_datasets does not download them itself; "
                f"obtain them as https://ir-datasets.com describes for this dataset (expected at {exc.args[0]})")
    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, TimeoutError, socket.gaierror)) or all_failed:
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f" from {urlparse(url).hostname}" if url else ""
        return (f"{name}: the dataset's files could not be downloaded{where} ({type(exc).__name__}) and are not in the ir_datasets cache "
                f"({home}); run it once on a machine that reaches the dataset's servers and copy its ir_datasets cache here "
                "(or point IR_DATASETS_HOME at the copy)")
    return None


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
    with _library_log(irds) as log:
        try:
            # the first document is read before the progress bar starts: it is what downloads the files
            docs = iter(ds.docs_iter())
            first = next(docs, None)
            try:
                count = ds.docs_count()
            except Exception:  # noqa: BLE001 - a count is only a progress hint; some datasets cannot give one before reading
                count = None
            documents = {str(d.doc_id): d.default_text() for d in tqdm(itertools.chain([first] if first is not None else [], docs), total=count,
                                                                        desc=f"{dataset_id}: documents", disable=not progress, unit="doc")}
            texts = {str(q.query_id): q.default_text() for q in ds.queries_iter()}
            judgements = list(ds.qrels_iter())
        except Exception as exc:  # noqa: BLE001 - a download failure is named in one line; anything else is raised as it is
            message = _download_failure(exc, f"{PREFIX}{dataset_id}", irds)
            if message is None:
                raise
            raise GenIRError(message) from None
        log.replay()
    grades: dict[str, dict[str, int]] = {}
    for qrel in judgements:
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
