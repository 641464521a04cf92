"""Attribution patching: every node's patch effect estimated from two forward passes and one backward pass.

    table = attribute(gm, batch, direction="denoise")     # per pair and node: methods "atp" and "atp_qk"
    check, rho = verify_top_k(gm, batch, table, k=10)     # exact patching of the top-k nodes; Spearman rho

AtP (Nanda 2023) linearises the metric around the base run:
effect(n) ~ (a_source(n) - a_base(n)) . dmetric/da(n), for every node at once:
the decoder residual after each layer, every decoder sublayer, every attention
head (its d_head slice before the output projection), the encoder output and
every encoder layer's output at each token position. Nodes are `PatchSpec`s,
the same objects the exact engine patches, so any estimate can be checked.

`atp_qk` is AtP with the QK fix of AtP* (Kramar et al. 2024). A linearised
softmax misses patches that move an attention's queries or keys (saturated
attention has ~zero gradient). The fix recomputes, for every decoder
cross-attention, its softmax exactly with the patched input (the adapter's attention recompute,
`gm.adapter.attention`) and keeps only
what lies downstream of the head outputs linear:
  - key/value patches: an encoder-output position feeds every cross-attention
    as a key and a value; its estimate uses the exactly recomputed attention
    of each layer with that position patched;
  - query patches: a decoder node upstream of a cross-attention moves that
    attention's queries through the residual stream; the linear term of this
    direct path is swapped for the exact one.
Head and component outputs are themselves exact (the patch replaces the
output of the softmax, not its input). Decoder self-attention over the single
decoder position is linear (one key, weight 1) and needs no fix; paths
through encoder self-attention stay linearised.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ..errors import GenIRError
from ..models.execution import run
from ..vocabulary import ATTRIBUTION_METHODS
from .engine import ENCODER_OUTPUT, source_and_base, sweep
from .metrics import Metric, logit_diff
from .pairs import PairBatch, QueryPair, tokenize_pairs
from .specs import PatchSpec, target_specs, validate_specs

METHODS = ATTRIBUTION_METHODS


def attribution_nodes(gm, encoder_positions: int, decoder_positions: int = 1) -> list[PatchSpec]:
    """Every node AtP scores: decoder resid per layer, decoder sublayers, attention heads, encoder positions (output and per layer, when there is an encoder)."""
    nodes = [*target_specs(gm, "resid", decoder_positions=decoder_positions), *target_specs(gm, "component"), *target_specs(gm, "head")]
    if gm.adapter.has("encoder"):
        nodes += [
            *target_specs(gm, "encoder-position", encoder_positions=encoder_positions),
            *target_specs(gm, "encoder-layer-position", encoder_positions=encoder_positions),
        ]
    return nodes


def _slice(node: PatchSpec, d_head: int) -> tuple[slice | int, slice]:
    t = slice(None) if node.position is None else slice(node.position, node.position + 1)
    d = slice(None) if node.head is None else slice(node.head * d_head, (node.head + 1) * d_head)
    return t, d


@torch.no_grad()
def _residual_delta(gm, node: PatchSpec, delta: torch.Tensor) -> torch.Tensor:
    """What a decoder node's patch adds to the residual stream, (P, T, D)."""
    site = node.parsed
    t, _ = _slice(node, gm.adapter.d_head)
    if site.facet == "heads":
        delta = gm.adapter.head_contributions(site, delta)[..., node.head, :]
    out = torch.zeros_like(delta)
    out[:, t] = delta[:, t]
    return out


def _qk_fix(gm, nodes, src, bas, base) -> torch.Tensor:
    """(N, P) exact-minus-linear corrections for every query or key/value path through a decoder cross-attention."""
    n_pairs = len(base)
    fix = torch.zeros(len(nodes), n_pairs)
    e_base, e_src = bas.values[ENCODER_OUTPUT], src.values[ENCODER_OUTPUT]
    encoder_nodes = [i for i, n in enumerate(nodes) if n.parsed == ENCODER_OUTPUT]
    residual_deltas = {  # what each decoder node's patch adds to the residual stream
        i: _residual_delta(gm, n, src.values[n.parsed] - bas.values[n.parsed]) for i, n in enumerate(nodes) if n.parsed.side == "decoder"
    }
    for site in gm.components("decoder", ("cross_attn",)):
        layer = site.layer
        attn = gm.adapter.attention(site, base)  # the adapter's exact recompute: norm, projections, scaling, masks
        resid = bas.values[site.with_facet("resid_pre")]
        grad = attn.split(bas.grads[site.with_facet("heads")])  # dmetric / d(head outputs), (P, H, Tq, d)
        keys, values = attn.keys_values(e_base)
        with torch.no_grad():
            z_base = attn.heads(resid, keys, values)
        model_z = attn.split(bas.values[site.with_facet("heads")])
        err = float((z_base - model_z).abs().max())
        if err > 1e-3 * max(1.0, float(model_z.abs().max())):
            raise GenIRError(f"{gm.path}: the recomputed cross-attention of layer {layer} differs from the model's by {err:.3g}; "
                             f"the {gm.adapter.family} adapter's attention recipe does not match this model (run without the QK fix)")
        # First-order effect of head outputs z (..., P, H, Tq, d) on the metric.
        score = lambda z, g=grad: (z * g).flatten(-3).sum(-1)  # noqa: E731
        if encoder_nodes:
            # Key/value patches: every position p of the encoder output, patched one at a time, all at once.
            e = e_base.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                vjp = torch.autograd.grad(score(attn.heads(resid, *attn.keys_values(e))).sum(), e)[0]
            with torch.no_grad():
                patched = attn.heads_with_each_position_patched(resid, keys, values, *attn.keys_values(e_src))
                exact = score(patched - z_base[:, None], grad[:, None])  # (P, p)
                linear = ((e_src - e_base) * vjp).sum(-1)  # (P, p)
            for i in encoder_nodes:
                fix[i] += (exact - linear)[:, nodes[i].position]
        upstream = [
            i for i, n in enumerate(nodes)
            if n.parsed.side == "decoder" and gm.adapter.order_key(n.parsed) < gm.adapter.order_key(site.with_facet("resid_pre"))
        ]
        if upstream:
            # Query patches: a node's residual delta moves this attention's queries (direct path).
            deltas = torch.stack([residual_deltas[i] for i in upstream])
            r = resid.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                vjp = torch.autograd.grad(score(attn.heads(r, keys, values)).sum(), r)[0]
            with torch.no_grad():
                exact = score(attn.heads(resid[None] + deltas, keys, values) - z_base)  # (E, P)
                linear = (deltas * vjp).flatten(-2).sum(-1)
            fix[upstream] += exact - linear
    return fix


@contextmanager
def _weights_frozen_but_embeddings(gm):
    """Only the input embeddings require grad during attribution.

    Activations then still carry gradients (they all descend from an
    embedding lookup), but the backward pass skips every other weight
    gradient, which would cost as much as the activation gradients AtP needs.
    """
    params = list(gm.hf_model.parameters())
    before = [p.requires_grad for p in params]
    embeddings = _input_embedding_weights(gm.hf_model)
    try:
        for p in params:
            p.requires_grad_(any(p is e for e in embeddings))
        yield
    finally:
        for p, flag in zip(params, before):
            p.requires_grad_(flag)
        for e in embeddings:
            e.grad = None


def _input_embedding_weights(model) -> list:
    """The encoder's input embedding and, where the decoder has its own (BERT2BERT, T5Gemma), the decoder's."""
    weights = [model.get_input_embeddings().weight]
    decoder = model.get_decoder() if model.config.is_encoder_decoder else None
    own = decoder.get_input_embeddings().weight if decoder is not None else None
    return weights + ([own] if own is not None and own is not weights[0] else [])


def _attribute_pair_batch(gm, batch: PairBatch, nodes: list[PatchSpec], direction: str, metric: Metric, qk_fix: bool) -> dict:
    source, base = source_and_base(batch, direction)
    # Without encoder nodes the encoder runs once per query, outside the differentiated passes.
    decoder_nodes_only = all(n.parsed.side == "decoder" for n in nodes)
    if decoder_nodes_only:
        source, base = gm.encode(source), gm.encode(base)
    sites = sorted({n.parsed for n in nodes}, key=gm.adapter.order_key)
    extra = []
    if qk_fix:
        cross = gm.components("decoder", ("cross_attn",))
        extra = ([] if decoder_nodes_only else [ENCODER_OUTPUT]) + [c.with_facet(f) for c in cross for f in ("resid_pre", "heads")]
    grad_sites = sorted(set(sites) | {s for s in extra if s.facet == "heads"}, key=gm.adapter.order_key)
    reads = sorted(set(sites) | set(extra), key=gm.adapter.order_key)
    targets = batch.targets
    src = run(gm, source, reads=reads)  # forward 1
    with _weights_frozen_but_embeddings(gm):  # forward 2 + backward
        bas = run(gm, base, reads=reads, grads=grad_sites, metric=lambda logits: metric(logits, targets).sum())
    if decoder_nodes_only and gm.adapter.has("encoder"):
        src.values[ENCODER_OUTPUT], bas.values[ENCODER_OUTPUT] = source.encoder_hidden, base.encoder_hidden
    d_head = gm.adapter.d_head
    atp = torch.full((len(nodes), len(batch)), float("nan"))
    for i, node in enumerate(nodes):
        t, d = _slice(node, d_head)
        site = node.parsed
        prod = (src.values[site] - bas.values[site]) * bas.grads[site]
        value = prod[:, t, d].flatten(1).sum(1).float().cpu()
        if node.position is not None and site.side == "encoder":
            value[node.position >= batch.lengths] = float("nan")
        atp[i] = value
    estimates = {"atp": atp}
    if qk_fix:
        estimates["atp_qk"] = atp + _qk_fix(gm, nodes, src, bas, base)
    with torch.no_grad():
        base_value, source_value = metric(bas.logits, targets).float().cpu(), metric(src.logits, targets).float().cpu()
    clean, corrupted = (source_value, base_value) if direction == "denoise" else (base_value, source_value)
    return {"estimates": estimates, "base": base_value, "clean": clean, "corrupted": corrupted}


def _table(batch: PairBatch, nodes: list[PatchSpec], direction: str, part: dict) -> pd.DataFrame:
    axes = pd.DataFrame([n.axes() for n in nodes])
    for col in ("layer", "head", "position"):
        axes[col] = axes[col].astype("Int64")
    n_pairs = len(batch.pairs)
    node_idx = np.tile(np.arange(len(nodes)), n_pairs)  # pair-major: all nodes of pair 0, then pair 1, ...
    pair_idx = np.repeat(np.arange(n_pairs), len(nodes))
    grid = axes.iloc[node_idx].reset_index(drop=True)
    grid.insert(0, "pair_id", np.array([p.pair_id for p in batch.pairs], dtype=object)[pair_idx])
    grid.insert(1, "decides", np.array([p.decides for p in batch.pairs], dtype=object)[pair_idx])
    grid.insert(2, "direction", direction)
    base, clean, corrupted = (part[k].numpy()[pair_idx] for k in ("base", "clean", "corrupted"))
    span = clean - corrupted
    out = []
    for method, est in part["estimates"].items():
        estimate = est.numpy()[node_idx, pair_idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = np.where(span != 0, (base + estimate - corrupted) / span, np.nan)
        out.append(grid.assign(method=method, estimate=estimate, base=base, clean=clean, corrupted=corrupted, normalised=normalised))
    table = pd.concat(out, ignore_index=True)
    return table[table.estimate.notna()].reset_index(drop=True)


def attribute(
    gm,
    pairs: PairBatch | list[QueryPair],
    *,
    direction: str = "denoise",
    metric: Metric = logit_diff,
    nodes: list[PatchSpec] | None = None,
    qk_fix: bool = True,
    pairs_per_batch: int = 64,
    align: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """AtP (and AtP* QK-fixed) estimates of `metric(patched) - metric(base)` for every node and pair.

    Columns: pair_id, decides, direction, site, side, layer, component, head,
    position, method, estimate, base, clean, corrupted, normalised (the
    estimated normalised patch effect, 0 = corrupted run, 1 = clean run).
    """
    if qk_fix:
        gm.adapter.require("cross_attn", analysis="the AtP* QK fix (qk_fix=True; pass qk_fix=False for plain AtP)")
    batch = pairs if isinstance(pairs, PairBatch) else tokenize_pairs(gm, pairs, align)
    nodes = validate_specs(gm, list(nodes) if nodes is not None else attribution_nodes(gm, batch.width, batch.decoder_length))
    source_and_base(batch, direction)
    frames = []
    for start in tqdm(range(0, len(batch), pairs_per_batch), desc=f"attribution ({direction})", unit="pair batch", disable=not progress):
        part_batch = batch.select(list(range(start, min(start + pairs_per_batch, len(batch)))))
        frames.append(_table(part_batch, nodes, direction, _attribute_pair_batch(gm, part_batch, nodes, direction, metric, qk_fix)))
    return pd.concat(frames, ignore_index=True)


NODE_KEYS = ["site", "side", "layer", "component", "head", "position"]


def node_means(table: pd.DataFrame, value: str) -> pd.DataFrame:
    """Mean of `value` over pairs, per node."""
    return table.groupby(NODE_KEYS, dropna=False, sort=False)[value].mean().reset_index()


def verify_top_k(
    gm,
    pairs: PairBatch | list[QueryPair],
    table: pd.DataFrame,
    k: int = 10,
    *,
    method: str = "atp",
    metric: Metric = logit_diff,
    rows_per_forward: int = 512,
    pairs_per_batch: int = 64,
    align: str | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, float]:
    """Exactly patch the k nodes with the largest mean |estimate| and compare: a per-node table and Spearman's rho.

    `table` is `attribute`'s output on the same pairs with the same metric.
    """
    if method not in set(table["method"]):
        raise GenIRError(f"the attribution table has no {method!r} estimates (it has {', '.join(sorted(set(table['method'])))})")
    directions = set(table["direction"])
    if len(directions) != 1:
        raise GenIRError(f"the attribution table mixes directions {sorted(directions)}; verify one direction at a time")
    direction = directions.pop()
    means = node_means(table[table["method"] == method], "estimate")
    top = means.reindex(means["estimate"].abs().sort_values(ascending=False).index).head(k).reset_index(drop=True)
    specs = [PatchSpec(r.site, None if pd.isna(r.head) else int(r.head), None if pd.isna(r.position) else int(r.position)) for r in top.itertuples()]
    exact = sweep(gm, pairs, specs, direction=direction, metrics={"metric": metric}, rows_per_forward=rows_per_forward,
                  pairs_per_batch=pairs_per_batch, align=align, progress=progress)
    exact["exact"] = exact["value"] - (exact["corrupted"] if direction == "denoise" else exact["clean"])
    merged = top.merge(node_means(exact, "exact"), on=NODE_KEYS, how="left")
    merged = merged.rename(columns={"estimate": method})
    merged[f"{method}_rank"] = merged[method].abs().rank(ascending=False, method="min").astype(int)
    merged["exact_rank"] = merged["exact"].abs().rank(ascending=False, method="min").astype(int)
    rho = float(spearmanr(merged[method], merged["exact"]).statistic) if len(merged) > 1 else float("nan")
    return merged, rho
