"""Training examples: T5 span corruption and DSI indexing/retrieval.

Both return lists of (input_ids, label_ids) for `TrainLoop`.
"""
from __future__ import annotations

import random

from ..data.corpus import RetrievalDataset
from ..docids import AtomicDocids

INDEX_TOKENS = 32  # tokens of an indexing example's input, the T5 tokenizer's </s> included (the public DSI code's setting)


def span_corrupt(ids: list[int], rng: random.Random, sentinel_ids: list[int], eos_id: int, noise: float = 0.15, mean_span: float = 3.0) -> tuple[list[int], list[int]]:
    """T5 span corruption: drop ~`noise` of tokens in spans, replaced by sentinels; targets restore them."""
    n = len(ids)
    n_noise = max(1, round(n * noise))
    n_spans = max(1, min(len(sentinel_ids), round(n_noise / mean_span)))
    starts = sorted(rng.sample(range(n), min(n_spans, n)))
    masked = [False] * n
    for s in starts:
        for j in range(s, min(n, s + max(1, round(rng.expovariate(1 / mean_span))))):
            masked[j] = True
    inp, tgt, k, i = [], [], 0, 0
    while i < n:
        if masked[i] and k < len(sentinel_ids):
            inp.append(sentinel_ids[k])
            tgt.append(sentinel_ids[k])
            while i < n and masked[i]:
                tgt.append(ids[i])
                i += 1
            k += 1
        else:
            inp.append(ids[i])
            i += 1
    return inp + [eos_id], tgt + [eos_id]


def span_examples(texts: list[str], tokenizer, epoch: int, seed: int, max_length: int = 64) -> list[tuple[list[int], list[int]]]:
    """One epoch of T5 span-corruption examples over `texts`, deterministic for (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)])
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
        if ids:
            out.append(span_corrupt(ids, rng, sentinels, tokenizer.eos_token_id))
    return out


def dsi_examples(dataset: RetrievalDataset, tokenizer, scheme: AtomicDocids, epoch: int, seed: int, indexing_ratio: float, index_tokens: int = INDEX_TOKENS) -> list[tuple[list[int], list[int]]]:
    """Indexing (first `index_tokens` document tokens -> docid) and retrieval (train query -> docid).

    `indexing_ratio` is the number of indexing examples per retrieval example in
    each epoch (the paper's NQ setting is 32); documents are cycled so each is
    indexed about equally often.
    """
    rng = random.Random(seed * 100_003 + epoch)
    # a query with several relevant documents is one example per document (sorted: the order must not depend on hashing)
    retrieval = [
        (tokenizer(q.text, truncation=True, max_length=64)["input_ids"], scheme.target_ids(d))
        for q in dataset.split("train")
        for d in sorted(dataset.qrels.get(q.query_id, ()))
    ]
    docs = sorted(dataset.documents)
    n_index = max(len(docs), round(indexing_ratio * len(retrieval))) if docs else 0
    order = [docs[i % len(docs)] for i in range(n_index)]
    indexing = [
        (tokenizer(dataset.documents[d], truncation=True, max_length=index_tokens)["input_ids"], scheme.target_ids(d))
        for d in order
    ]
    examples = retrieval + indexing
    rng.shuffle(examples)
    return examples
