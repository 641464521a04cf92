"""Query-focused retrieval heads (QRHead, Zhang et al. 2025): calibrated query-to-document attention, head detection, the QR-retriever.

    scores = qr_token_scores(lm, examples)             # per example: (L, H, T) calibrated attention from the query onto each token
    heads = detect_qr_heads(scores, examples, top_k=16) # tidy per-head table, ranked by mass on the relevant documents
    run = qr_rankings(scores, examples, selected)       # {example_id: {doc_id: score}}, for ir_measures

A head's QR score of document d: the attention from the query tokens onto
d's tokens, averaged over query tokens, minus the same for a content-free
query ("N/A") in the same prompt; per document, tokens below mean - 2 std of
its calibrated scores are dropped as outliers and the rest summed.
Detection ranks heads by their mean score on the relevant documents of a
labelled split; the QR-retriever sums the selected heads' calibrated
per-token scores, filters and sums per document, and ranks the documents.

Only the query rows of attention are computed (the adapter's attention
recompute from the residual entering each layer), never T x T.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.incontext import DOCUMENT, InContextExample
from ..docids import docid_token
from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import run
from .prompts import pad_offsets, prompt_batch, token_span

NULL_QUERY = "N/A"  # QRHead's content-free calibration query
OUTLIER_STDS = 2.0


@dataclass
class ExampleSpans:
    """Token spans ([start, end), unpadded) of one example's documents and query, in the real and the null prompt."""

    documents: list[tuple[int, int]]
    query: tuple[int, int]
    null_query: tuple[int, int]
    null_prompt: str


def example_spans(tokenizer, example: InContextExample) -> ExampleSpans:
    """Locate the documents and the query of an in-context example in its prompt, and build the null-query prompt."""
    documents, cursor = [], 0
    for doc in example.documents:
        text = DOCUMENT.format(docid=docid_token(doc.doc_id), title=doc.title, text=doc.text)
        at = example.prompt.find(text, cursor)
        if at < 0:
            raise GenIRError(f"example {example.example_id}: document {doc.doc_id} does not occur in its prompt")
        documents.append(token_span(tokenizer, example.prompt, text, what=f"document {doc.doc_id} of example {example.example_id}", start_char=at))
        cursor = at + len(text)
    where = example.prompt.rfind(example.query)
    if where < cursor:
        raise GenIRError(f"example {example.example_id}: the query does not follow the documents in its prompt")
    query = token_span(tokenizer, example.prompt, example.query, what=f"query of example {example.example_id}", start_char=where)
    null_prompt = example.prompt[:where] + NULL_QUERY + example.prompt[where + len(example.query):]
    null_query = token_span(tokenizer, null_prompt, NULL_QUERY, what=f"null query of example {example.example_id}", start_char=where)
    return ExampleSpans(documents, query, null_query, null_prompt)


@torch.no_grad()
def query_attention(gm, prompts: list[str], query_spans: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Per prompt, (L, H, T) attention from its query tokens onto every token, averaged over the query tokens (unpadded coordinates)."""
    batch = prompt_batch(gm, prompts)
    offsets = pad_offsets(batch)
    width = batch.input_ids.shape[1]
    starts = torch.tensor([s for s, _ in query_spans], device=offsets.device) + offsets
    ends = torch.tensor([e for _, e in query_spans], device=offsets.device) + offsets
    first = int(starts.min())
    positions = torch.arange(first, width, device=batch.input_ids.device)  # only the rows that hold a query token
    rows = (positions[None, :] >= starts[:, None]) & (positions[None, :] < ends[:, None])  # (B, W)
    sites = [Site("decoder", layer, "self_attn", "resid_pre") for layer in range(gm.n_layers("decoder"))]
    values = run(gm, batch, reads=sites).values
    per_layer = []
    for site in sites:
        attn = gm.adapter.attention(site.with_facet("out"), batch)
        resid = values[site]
        keys, _ = attn.keys_values(resid)
        weights = attn.weights(attn.query(resid, positions), keys, positions).float()  # (B, H, W, T)
        weights = weights * rows[:, None, :, None]
        per_layer.append(weights.sum(2) / rows.sum(1).clamp_min(1)[:, None, None])
    stacked = torch.stack(per_layer, 1).cpu()  # (B, L, H, T)
    return [stacked[b, :, :, int(offsets[b]):] for b in range(len(prompts))]


def qr_token_scores(gm, examples: list[InContextExample], batch_size: int = 8, progress: bool = True) -> list[tuple[torch.Tensor, ExampleSpans]]:
    """Calibrated per-token scores (L, H, T) of every example (real minus null query), with its spans."""
    if not examples:
        raise GenIRError("no in-context examples to score")
    out = []
    for start in tqdm(range(0, len(examples), batch_size), desc="QR scores", unit="batch", disable=not progress, leave=False):
        chunk = examples[start:start + batch_size]
        spans = [example_spans(gm.tokenizer, e) for e in chunk]
        real = query_attention(gm, [e.prompt for e in chunk], [s.query for s in spans])
        null = query_attention(gm, [s.null_prompt for s in spans], [s.null_query for s in spans])
        for r, n, s in zip(real, null, spans):
            length = min(r.shape[-1], n.shape[-1])
            out.append((r[..., :length] - n[..., :length], s))
    return out


def document_scores(per_token: torch.Tensor, spans: list[tuple[int, int]]) -> torch.Tensor:
    """(..., T) calibrated per-token scores -> (..., n_docs): per document, tokens below mean - 2 std dropped, the rest summed."""
    scores = []
    for start, end in spans:
        part = per_token[..., start:end]
        if part.shape[-1] < 2:
            scores.append(part.sum(-1))
            continue
        threshold = part.mean(-1, keepdim=True) - OUTLIER_STDS * part.std(-1, keepdim=True)
        scores.append(part.masked_fill(part <= threshold, 0.0).sum(-1))
    return torch.stack(scores, -1)


def detect_qr_heads(scored: list[tuple[torch.Tensor, ExampleSpans]], examples: list[InContextExample], top_k: int = 16) -> pd.DataFrame:
    """Per head: mean QR score on the relevant documents over the labelled examples; the `top_k` best are selected.

    Columns: layer, head, qr_score, rank, selected.
    """
    if not scored:
        raise GenIRError("the labelled split is empty: QR heads cannot be detected without labelled examples")
    total = None
    for (per_token, spans), example in zip(scored, examples):
        docs = document_scores(per_token, spans.documents)  # (L, H, n_docs)
        ids = [d.doc_id for d in example.documents]
        relevant = [ids.index(r) for r in example.relevant if r in ids]
        mass = docs[..., relevant].sum(-1)
        total = mass if total is None else total + mass
    mean = total / len(scored)
    n_layers, n_heads = mean.shape
    layer, head = torch.meshgrid(torch.arange(n_layers), torch.arange(n_heads), indexing="ij")
    frame = pd.DataFrame({"layer": layer.flatten().numpy(), "head": head.flatten().numpy(), "qr_score": mean.flatten().numpy()})
    frame["rank"] = frame.qr_score.rank(ascending=False, method="first").astype(int)
    frame["selected"] = frame["rank"] <= min(top_k, len(frame))
    return frame.sort_values(["layer", "head"]).reset_index(drop=True)


def qr_rankings(scored: list[tuple[torch.Tensor, ExampleSpans]], examples: list[InContextExample], heads: list[tuple[int, int]]) -> dict[str, dict[str, float]]:
    """The QR-retriever: {example_id: {doc_id: score}} from the summed calibrated scores of the selected heads."""
    if not heads:
        raise GenIRError("no QR heads selected")
    layers = torch.tensor([l for l, _ in heads])
    which = torch.tensor([h for _, h in heads])
    out = {}
    for (per_token, spans), example in zip(scored, examples):
        summed = per_token[layers, which].sum(0)  # (T,)
        scores = document_scores(summed, spans.documents)
        out[example.example_id] = {d.doc_id: float(s) for d, s in zip(example.documents, scores)}
    return out


def bm25_rankings(examples: list[InContextExample]) -> dict[str, dict[str, float]]:
    """BM25 (bm25s) over each example's own in-context documents (title and text) with its query."""
    import bm25s

    out = {}
    for example in examples:
        corpus = [f"{d.title} {d.text}" for d in example.documents]
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(corpus, stopwords=None, show_progress=False), show_progress=False)
        query = bm25s.tokenize([example.query], stopwords=None, return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(query)
        out[example.example_id] = {d.doc_id: float(s) for d, s in zip(example.documents, scores)}
    return out


@torch.no_grad()
def answer_rankings(gm, examples: list[InContextExample], batch_size: int = 8) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """The model's own answer: its next-token logits on the in-prompt docid tokens (the greedy answer is the top one when it is a docid).

    Returns the ranking and the greedy next token of each example.
    """
    rankings, generated = {}, {}
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = prompt_batch(gm, [e.prompt for e in chunk])
        logits = gm.check_finite(gm.logits(batch))
        for example, row in zip(chunk, logits):
            ids = gm.tokenizer.convert_tokens_to_ids([docid_token(d.doc_id) for d in example.documents])
            rankings[example.example_id] = {d.doc_id: float(row[i]) for d, i in zip(example.documents, ids)}
            generated[example.example_id] = gm.tokenizer.convert_ids_to_tokens(int(row.argmax()))
    return rankings, generated


def evaluate_rankings(rankings: dict[str, dict[str, dict[str, float]]], qrels: dict[str, dict[str, int]]) -> pd.DataFrame:
    """nDCG@10, R@1 and R@5 (ir_measures) of each named ranking: columns method, metric, value."""
    import ir_measures
    from ir_measures import R, nDCG

    measures = [nDCG @ 10, R @ 1, R @ 5]
    names = {str(nDCG @ 10): "ndcg@10", str(R @ 1): "recall@1", str(R @ 5): "recall@5"}
    rows = []
    for method, run_ in rankings.items():
        result = ir_measures.calc_aggregate(measures, qrels, run_)
        rows += [{"method": method, "metric": names[str(m)], "value": float(v)} for m, v in result.items()]
    return pd.DataFrame(rows)
