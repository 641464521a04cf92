"""In-context retrieval examples: K synthetic-corpus documents in the prompt, a query, and the relevant document's id as the answer.

    examples = incontext_examples(InContextConfig(n_train=0, n_detection=64, n_test=256, n_docs=16, seed=0))
    ex = examples[0]
    ex.prompt       # '@DOC_ID_17@ title : zorblax text : zorblax is a town ... question : who founded zorblax answer :'
    ex.answer       # '@DOC_ID_17@' (the relevant document's id token), ex.relevant == ['17']
    incontext_qrels(examples)          # {example_id: {doc_id: 1}} for IR metrics over the in-prompt documents

Document ids are labels drawn at random per example from `id_pool` atomic
docid tokens, so the id says nothing about the content: a model must read the
prompt to answer. Each split asks with its own query templates (train,
validation and test templates of the synthetic corpus: the detection split
uses the validation ones), and the relevant documents of the three splits are
disjoint sets of corpus documents, so the test split is held out in both
phrasing and facts.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from ..docids import docid_token
from ..errors import GenIRError
from .records import load_records, save_records
from .synthetic import SyntheticConfig, generate_corpus

SPLITS = ("train", "detection", "test")
# the synthetic corpus's template set each split asks with
TEMPLATE_SET = {"train": "train", "detection": "validation", "test": "test"}
DOCUMENT = "{docid} title : {title} text : {text}"
PROMPT = "{documents} question : {query} answer :"


@dataclass(frozen=True)
class InContextConfig:
    """Sizes of the splits, documents per prompt and the corpus; equal configs give identical examples."""
    n_train: int = 0
    n_detection: int = 64
    n_test: int = 256
    n_docs: int = 16  # documents in each prompt (K)
    seed: int = 0
    id_pool: int = 100  # document ids are drawn from @DOC_ID_0@ .. @DOC_ID_<id_pool - 1>@
    corpus_docs: int = 1000
    corpus_seed: int = 0

    def validate(self) -> "InContextConfig":
        """Raise a one-line GenIRError for a config that cannot produce examples."""
        for name in ("n_train", "n_detection", "n_test"):
            if getattr(self, name) < 0:
                raise GenIRError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.n_train + self.n_detection + self.n_test < 1:
            raise GenIRError("n_train, n_detection and n_test are all 0: no examples to make")
        if self.n_docs < 2:
            raise GenIRError(f"n_docs (documents per prompt) must be at least 2, got {self.n_docs}")
        if self.id_pool < self.n_docs:
            raise GenIRError(f"id_pool {self.id_pool} is smaller than n_docs {self.n_docs}: not enough distinct document ids")
        if self.corpus_docs < 10 * self.n_docs:
            raise GenIRError(f"corpus_docs {self.corpus_docs} must be at least 10 x n_docs ({10 * self.n_docs}) so the splits' relevant documents are disjoint")
        return self

    def counts(self) -> dict[str, int]:
        return {"train": self.n_train, "detection": self.n_detection, "test": self.n_test}

    def corpus(self) -> SyntheticConfig:
        return SyntheticConfig(n_docs=self.corpus_docs, seed=self.corpus_seed, n_pairs=0)


@dataclass(frozen=True)
class InContextDocument:
    """One document of a prompt: its in-prompt id (a label, not the corpus id), title and text."""
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class InContextExample:
    """One in-context retrieval example; `answer` is the id token of the (only) document in `relevant`."""
    example_id: str
    split: str
    documents: list[InContextDocument]
    query: str
    relevant: list[str]
    prompt: str
    answer: str
    corpus_doc_ids: list[str] = field(default_factory=list, compare=False)  # corpus ids of `documents`, for provenance

    @classmethod
    def from_json(cls, row: dict) -> "InContextExample":
        docs = row["documents"]
        if not isinstance(docs, list) or not all(isinstance(d, dict) and {"doc_id", "title", "text"} <= set(d) for d in docs):
            raise ValueError("documents must be a list of objects with doc_id, title and text")
        return cls(row["example_id"], row["split"], [InContextDocument(str(d["doc_id"]), d["title"], d["text"]) for d in docs],
                   row["query"], [str(r) for r in row["relevant"]], row["prompt"], row["answer"], list(row.get("corpus_doc_ids", [])))


def split_of_document(index: int) -> str:
    """Which split may ask about corpus document `index`: a tenth each for detection and test, the rest for train."""
    return {0: "test", 1: "detection"}.get(index % 10, "train")


def _example(example_id: str, split: str, rng: random.Random, ds, names: dict[str, str], askable: list[str],
             queries: dict[str, list[str]], config: InContextConfig) -> InContextExample:
    relevant = rng.choice(askable)
    chosen = rng.sample([d for d in ds.documents if d != relevant], config.n_docs - 1)
    chosen.insert(rng.randrange(config.n_docs), relevant)
    labels = [str(i) for i in rng.sample(range(config.id_pool), config.n_docs)]
    documents = [InContextDocument(label, names[c], ds.documents[c]) for label, c in zip(labels, chosen)]
    query = rng.choice(queries[relevant])
    answer_id = labels[chosen.index(relevant)]
    body = " ".join(DOCUMENT.format(docid=docid_token(d.doc_id), title=d.title, text=d.text) for d in documents)
    return InContextExample(example_id, split, documents, query, [answer_id], PROMPT.format(documents=body, query=query),
                            docid_token(answer_id), chosen)


def incontext_examples(config: InContextConfig = InContextConfig()) -> list[InContextExample]:
    """`n_train`, `n_detection` and `n_test` examples (in that order), each split drawn with its own seeded generator."""
    config.validate()
    ds = generate_corpus(config.corpus())
    names = {doc_id: entity_name(text) for doc_id, text in ds.documents.items()}
    order = sorted(ds.documents, key=int)
    out = []
    for split, n in config.counts().items():
        askable = [d for i, d in enumerate(order) if split_of_document(i) == split]
        queries: dict[str, list[str]] = {}
        for q in ds.queries:
            if q.split == TEMPLATE_SET[split]:
                queries.setdefault(ds.relevant(q.query_id), []).append(q.text)
        rng = random.Random(f"incontext-{config.seed}-{split}")
        out += [_example(f"{split}-{i}", split, rng, ds, names, askable, queries, config) for i in range(n)]
    return out


def entity_name(text: str) -> str:
    """The entity a synthetic-corpus document describes (its title), read off the document templates."""
    # the templates put the name first, after "the <kind>", or after "founded in <year> by <first> <last> ,"
    words = text.split()
    if words[0] == "the":
        return words[2]
    if words[0] == "founded":
        return words[words.index(",") + 1]
    return words[0]


def incontext_qrels(examples: list[InContextExample]) -> dict[str, dict[str, int]]:
    """Relevance judgements in the ir_measures / TREC shape: {example_id: {doc_id: 1}} (in-prompt ids)."""
    return {ex.example_id: {d: 1 for d in ex.relevant} for ex in examples}


def config_record(config: InContextConfig) -> dict:
    """The config as a JSON-ready dict."""
    return asdict(config)


def save_incontext(examples: list[InContextExample], path) -> None:
    """Write examples to a JSONL file (one example a line), atomically."""
    save_records(examples, path)


def load_incontext(path) -> list[InContextExample]:
    """Read an incontext.jsonl file; a malformed line, or an answer that is not one of its documents, names file and line."""
    examples = load_records(path, InContextExample)
    for lineno, ex in enumerate(examples, start=1):
        ids = [d.doc_id for d in ex.documents]
        if len(set(ids)) != len(ids) or not ex.relevant or not set(ex.relevant) <= set(ids):
            raise GenIRError(f"{path}, example {lineno} ({ex.example_id}): relevant {ex.relevant} must be among its distinct document ids")
    return examples
