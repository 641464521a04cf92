"""Per-head scores of the query-reading heads of a retrieval model (encoder-decoder or decoder-only), on clean/corrupted pairs.

    deciding = deciding_positions(gm, pairs)            # tidy: pair_id, position, token, effect, deciding (query-position patching)
    qr = qr_head_scores(gm, pairs, deciding)            # (L, H) calibrated attention mass on the deciding tokens (QRHead recipe)
    causal = causal_head_scores(gm, pairs, mask="uniform")   # layer, head, patch_effect, ablation_effect (single heads)
    masking_effects(gm, pairs, [[(1, 2), (3, 0)]], "uniform")  # the share of the logit difference lost when a set is masked together
    lens = head_lens(gm, batch, targets)                # layer, head, docid_share_top10, target_rank (the head's output alone)

(a) The deciding query tokens of a pair are those whose clean value, patched
into the corrupted run at the query's input (encoder output of an
encoder-decoder, the embedding entering decoder layer 0 of a decoder-only
model), restores at least half of the largest single-position effect. A
head's QR score is the attention mass from the predicting position onto them,
minus the mass onto the same positions when those tokens are replaced by a
content-free token (the calibration of QRHead, whose content-free query is
"N/A"; here the query keeps its length so positions line up).
(b) patch_effect: mean normalised logit-difference effect of patching the
head's clean output into the corrupted run (0 = corrupted, 1 = clean);
ablation_effect: the share of the clean-vs-corrupted logit difference lost
when the head alone is masked in the clean run (heads.masking: uniform
attention or removed output). Single-head effects do not add up: the effect
of a set of heads is measured by masking the set together
(`masking_effects`).
(c) The head's output at the predicting position, through the output
projection, the final norm and the unembedding: the share of docid tokens
among its top 10 tokens and the vocabulary rank of the target token (the
relevant docid, or the first answer token of a NIAH trial).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import GenIRError
from ..interventions import InterventionSpec
from ..models.components import Site
from ..models.execution import QueryBatch, run
from ..patching.engine import sweep
from ..patching.metrics import logit_diff
from ..patching.pairs import PairBatch
from .masking import DEFAULT_MASK, masked_set_values
from .query_reading import head_site, predicting_attention, query_heads, query_kind

DECIDING_SHARE = 0.5  # a position decides when it restores at least this share of the pair's largest position effect
LENS_TOP = 10


def query_input_site(gm) -> str:
    """Where a query token enters the heads' view: the encoder output, or the residual entering decoder layer 0."""
    return "encoder.output" if query_kind(gm) == "cross_attn" else "decoder.layers.0.resid_pre"


def _valid_columns(batch: PairBatch) -> torch.Tensor:
    """(P, T) bool: the aligned query columns of each pair (padding excluded)."""
    columns = torch.arange(batch.width)[None, :]
    lengths = batch.lengths[:, None]
    return columns >= batch.width - lengths if batch.decoder_only else columns < lengths


@torch.no_grad()
def _decoder_only_position_effects(gm, batch: PairBatch) -> torch.Tensor:
    """(P, T) normalised effect of patching the clean input embedding at each position into the corrupted run.

    Decoder-only models are patched position by position with `run` writes: the intervention executor's
    decoder-side rows address the ranking step's positions (one per decoding step), not the prompt's.
    """
    site = Site.parse(query_input_site(gm))
    clean = run(gm, batch.clean, reads=[site])
    corrupted_logits = gm.logits(batch.corrupted)
    low, high = logit_diff(corrupted_logits, batch.targets).cpu(), logit_diff(clean.logits, batch.targets).cpu()
    source = clean.values[site]
    effect = torch.full((len(batch), batch.width), float("nan"))
    for position in range(batch.width):
        def write(x, position=position):
            x = x.clone()
            x[:, position] = source[:, position]
            return x
        value = logit_diff(run(gm, batch.corrupted, writes={site: write}).logits, batch.targets).cpu()
        effect[:, position] = torch.where(high != low, (value - low) / (high - low), torch.full_like(value, float("nan")))
    return effect


def deciding_positions(gm, batch: PairBatch, rows_per_forward: int | None = 512, progress: bool = False) -> pd.DataFrame:
    """Query-position patching (denoise) of every pair: pair_id, position, clean_token, effect, deciding."""
    if batch.decoder_only:
        effect = _decoder_only_position_effects(gm, batch)
    else:
        specs = [InterventionSpec(query_input_site(gm), position=p) for p in range(batch.width)]
        table = sweep(gm, batch, specs, metrics={"logit_diff": logit_diff}, rows_per_forward=rows_per_forward, progress=progress)
        effect = torch.full((len(batch), batch.width), float("nan"))
        index = {p.pair_id: i for i, p in enumerate(batch.pairs)}
        for pair_id, position, value in zip(table.pair_id, table.position, table.normalised):
            effect[index[pair_id], int(position)] = float(value)
    effect = effect.masked_fill(~_valid_columns(batch), float("nan"))
    best = torch.nan_to_num(effect, nan=-np.inf).max(1).values
    deciding = (effect >= DECIDING_SHARE * best[:, None]) & (best[:, None] > 0)
    rows = [{"pair_id": pair.pair_id, "position": t, "clean_token": batch.clean_tokens[i][t], "corrupted_token": batch.corrupted_tokens[i][t],
             "effect": float(effect[i, t]), "deciding": bool(deciding[i, t])}
            for i, pair in enumerate(batch.pairs) for t in range(batch.width) if not torch.isnan(effect[i, t])]
    return pd.DataFrame(rows)


def deciding_mask(batch: PairBatch, deciding: pd.DataFrame) -> torch.Tensor:
    """(P, T) bool mask of each pair's deciding positions, from the `deciding_positions` table."""
    mask = torch.zeros(len(batch), batch.width, dtype=torch.bool)
    index = {p.pair_id: i for i, p in enumerate(batch.pairs)}
    for pair_id, position in deciding[deciding.deciding][["pair_id", "position"]].itertuples(index=False):
        mask[index[pair_id], int(position)] = True
    return mask


def content_free_token(tokenizer) -> int:
    """The token that replaces deciding tokens for calibration: the unknown token, else padding."""
    for token in (tokenizer.unk_token_id, tokenizer.pad_token_id):
        if token is not None:
            return int(token)
    raise GenIRError("the tokenizer has neither an unknown nor a padding token to build a content-free query from")


@torch.no_grad()
def qr_head_scores(gm, batch: PairBatch, deciding: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(L, H) mean over pairs of (attention on the deciding tokens) - (the same with them replaced by a content-free token)."""
    if deciding.shape != (len(batch), batch.width):
        raise GenIRError(f"deciding mask of shape {tuple(deciding.shape)} for {len(batch)} pairs of width {batch.width}")
    keep = deciding.any(1)
    if not bool(keep.any()):
        raise GenIRError(f"{gm.path}: no pair has a deciding query position (query-position patching moved no logit difference)")
    clean = batch.clean
    null_ids = clean.input_ids.clone()
    null_ids[deciding.to(null_ids.device)] = content_free_token(gm.tokenizer)
    total = None
    rows = torch.nonzero(keep)[:, 0]
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        mask = deciding[part].float()
        real = predicting_attention(gm, clean.select(part))
        null = predicting_attention(gm, QueryBatch(null_ids[part.to(null_ids.device)], clean.attention_mask[part.to(null_ids.device)]))
        mass = ((real - null).cpu() * mask[:, None, None, :]).sum(-1).sum(0)
        total = mass if total is None else total + mass
    return total / len(rows)


def masking_effects(gm, batch: PairBatch, sets: list[list[tuple[int, int]]], mask: str = DEFAULT_MASK, rows_per_forward: int | None = 512) -> np.ndarray:
    """(len(sets),) share of the clean-vs-corrupted logit difference lost when each head set is masked together in the clean run:
    1 - mean over pairs of (masked - corrupted) / (clean - corrupted); pairs whose clean and corrupted runs tie are left out.

    Each set is masked at once (heads.masking), so interactions between its heads are measured, never assumed away.
    """
    unique = list(dict.fromkeys(tuple(sorted(s)) for s in sets))
    targets = batch.targets
    reduce = lambda logits, items: logit_diff(logits, targets.select(items.cpu()))  # noqa: E731
    values = masked_set_values(gm, batch.clean, [list(u) for u in unique], reduce, mask, query_kind(gm), rows_per_forward)
    with torch.no_grad():
        clean = logit_diff(gm.logits(batch.clean).float(), targets).cpu()
        corrupted = logit_diff(gm.logits(batch.corrupted).float(), targets).cpu()
    span = clean - corrupted
    normalised = torch.where(span != 0, (values - corrupted) / span, torch.full_like(values, float("nan")))
    effect = dict(zip(unique, (1.0 - normalised.nanmean(1)).tolist()))
    return np.array([effect[tuple(sorted(s))] for s in sets], dtype=float)


def causal_head_scores(gm, batch: PairBatch, rows_per_forward: int | None = 512, progress: bool = False, mask: str = DEFAULT_MASK) -> pd.DataFrame:
    """layer, head, patch_effect (denoise, normalised), ablation_effect (share of the logit difference lost when the head alone is masked)."""
    site = lambda layer: head_site(gm, layer).name  # noqa: E731
    heads = query_heads(gm)
    patched = sweep(gm, batch, [InterventionSpec(site(l), head=h) for l, h in heads], metrics={"logit_diff": logit_diff},
                    rows_per_forward=rows_per_forward, progress=progress)
    patch = patched.groupby(["layer", "head"])["normalised"].mean()
    ablation = masking_effects(gm, batch, [[h] for h in heads], mask, rows_per_forward)
    return pd.DataFrame([{"layer": l, "head": h, "patch_effect": float(patch[(l, h)]), "ablation_effect": float(a)} for (l, h), a in zip(heads, ablation)])


@torch.no_grad()
def head_outputs(gm, batch: QueryBatch) -> torch.Tensor:
    """(B, L, H, D) what every query-reading head adds to the residual at the predicting position."""
    sites = [head_site(gm, layer) for layer in range(gm.n_layers("decoder"))]
    values = run(gm, batch, reads=sites).values
    return torch.stack([gm.adapter.head_contributions(s.with_facet("out"), values[s][:, -1]) for s in sites], 1)


@torch.no_grad()
def head_lens(gm, batch: QueryBatch, targets: torch.Tensor, batch_size: int = 64, docids: bool = True) -> pd.DataFrame:
    """Per head: mean share of docid tokens among its top-10 projected tokens (NaN without `docids`: a NIAH answer is no docid)
    and median vocabulary rank of each row's target token."""
    docids = gm.docids.vocab_ids if docids and gm.docids is not None and len(gm.docids) else torch.empty(0, dtype=torch.long)
    shares, ranks = [], []
    for start in range(0, len(batch), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(batch)))
        logits = gm.adapter.project(head_outputs(gm, batch.select(rows))).float().cpu()  # (B, L, H, V)
        top = logits.topk(LENS_TOP, -1).indices
        shares.append(torch.isin(top, docids).float().mean(-1))
        target = logits.gather(-1, targets[rows][:, None, None, None].expand(*logits.shape[:-1], 1))
        ranks.append((logits > target).sum(-1).float() + 1)
    share, rank = torch.cat(shares), torch.cat(ranks)
    return pd.DataFrame([{"layer": l, "head": h, "docid_share_top10": float(share[:, l, h].mean()) if len(docids) else float("nan"),
                          "target_rank": float(rank[:, l, h].median())} for l, h in query_heads(gm)])
