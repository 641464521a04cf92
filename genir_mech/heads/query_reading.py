"""Which heads of a model can read the query, what task the model answers, and where those heads look from the predicting position.

    kind = query_kind(gm)                  # "cross_attn" (encoder-decoder) or "self_attn" (decoder-only); GenIRError otherwise
    heads = query_heads(gm)                # [(layer, head), ...] of that kind, from the model's config
    task = model_task(gm)                  # "genir" (atomic docids) or "niah" (needle-in-a-haystack answers)
    weights = predicting_attention(gm, batch)   # (B, L, H, T) attention of every such head from the predicting position

An encoder-decoder model reads its query (or haystack) only through decoder
cross-attention; a decoder-only model reads it through self-attention from the
last position. Both are compared as "the heads that can read the query". The
attention row is recomputed from the residual entering each layer (the
adapter's attention recipe), one row per head, never T x T.
"""
from __future__ import annotations

import torch

from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import QueryBatch, run
from ..models.model_card import ModelCard

TASKS = ("genir", "niah")
ENCODER_OUTPUT_SITE = Site.parse("encoder.output")


def query_kind(gm) -> str:
    """The attention kind through which the predicting position reads the query; GenIRError (one line) when there is none."""
    kinds = gm.adapter.kinds("decoder")
    if gm.adapter.has("encoder"):
        if "cross_attn" not in kinds:
            raise GenIRError(f"{gm.path}: its decoder has no cross-attention, so no head can read the query in the encoder; "
                             "heads compare needs cross-attention heads (encoder-decoder) or self-attention heads (decoder-only)")
        return "cross_attn"
    if "self_attn" not in kinds:
        raise GenIRError(f"{gm.path}: its decoder has no self-attention, so no head can read the query")
    return "self_attn"


def query_heads(gm) -> list[tuple[int, int]]:
    """Every (layer, head) of the query-reading kind, read off the config."""
    query_kind(gm)
    return [(layer, head) for layer in range(gm.n_layers("decoder")) for head in range(gm.adapter.n_heads)]


def head_site(gm, layer: int) -> Site:
    """The `.heads` site of the query-reading sublayer of decoder `layer`."""
    return Site("decoder", layer, query_kind(gm), "heads")


def model_task(gm) -> str:
    """"niah" for a checkpoint trained on needle-in-a-haystack (its card's objective), "genir" for a model with atomic docids.

    A model that is neither (e.g. a span-corruption pretrained T5) has no query whose answer the heads could be
    compared on, and is refused with one line.
    """
    card = ModelCard.read(gm.path) if gm.path else ModelCard()
    if card.objective == "niah":
        return "niah"
    if gm.docids is not None and len(gm.docids) > 0 and card.objective not in ("span", "pretrain"):
        return "genir"
    raise GenIRError(f"{gm.path}: neither a GenIR model (atomic docids, objective dsi) nor a needle-in-a-haystack model "
                     f"(objective niah; its card says {card.objective!r}): heads compare needs a retrieval task to score heads on")


def predicting_rows(gm, batch: QueryBatch):
    """Run `batch` once: the resid_pre sites of every query-reading sublayer, and the run (their values, the encoder output, the logits)."""
    kind = query_kind(gm)
    sites = [Site("decoder", layer, kind, "resid_pre") for layer in range(gm.n_layers("decoder"))]
    reads = list(sites) + ([ENCODER_OUTPUT_SITE] if kind == "cross_attn" else [])
    return sites, run(gm, QueryBatch(batch.input_ids, batch.attention_mask, None, batch.decoder_input_ids), reads=reads)


@torch.no_grad()
def predicting_attention(gm, batch: QueryBatch, with_logits: bool = False):
    """(B, L, H, T) attention weights of every query-reading head from the predicting (last decoder) position onto the T query columns.

    Encoder-decoder: the decoder's last position onto the encoder positions (cross-attention).
    Decoder-only: the last position onto every position of the (left-padded) prompt (self-attention).
    With `with_logits`, also the (B, vocab) logits of that position (the same forward pass).
    """
    sites, result = predicting_rows(gm, batch)
    values = result.values
    source = values.get(ENCODER_OUTPUT_SITE)
    rows = []
    for site in sites:
        attn = gm.adapter.attention(site.with_facet("out"), batch)
        resid = values[site]
        last = torch.tensor([resid.shape[1] - 1], device=resid.device)
        keys, _ = attn.keys_values(source if source is not None else resid)
        rows.append(attn.weights(attn.query(resid, last), keys, last)[:, :, 0].float())  # (B, H, T)
    weights = torch.stack(rows, 1)
    return (weights, result.logits) if with_logits else weights
