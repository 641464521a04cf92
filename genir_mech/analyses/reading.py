"""Component reading: which earlier components each MLP neuron and cross-attention head reads from (paper Fig. 5).

    df = reading(gm, texts)                         # reader_layer, reader_component, source_layer, source_component, metric, value
    by_stage = reading_by_stage(df, stages)         # reader_stage, reader_component, source_stage, source_component, metric, value

At the decoder step that ranks the documents, the residual a sublayer reads is
the decoder input embedding plus every earlier component output. With the
sublayer norm's statistics frozen (`adapter.linearised_norm`) the read is
linear in those parts, so each part gets an exact share:

- MLP neuron i (only active ones, pre-activation > 0): W_in[i] . norm(c_out);
- gated MLP neuron i (gated-GELU T5 v1.1 / Flan-T5: h_i = act(W_gate[i] . x) *
  W_in[i] . x), with its gate value g_i = act(W_gate[i] . norm(resid)) frozen
  like the norm statistics: g_i * sign(h_i) * W_in[i] . norm(c_out), so the
  parts sum to |h_i|; a neuron is active when h_i != 0;
- cross-attention head h: (norm(c_out) W_Q^h) . k^h, with k^h the key at the
  encoder position the head attends to most (argmax of the scores the
  adapter's attention recompute gives, masks and position bias included).

It needs an encoder and cross-attention (`gm.adapter.require`).

The scores of all parts sum to the neuron's pre-activation (gated: |h_i|) or to the head's
top attention score. Metrics, pooled over queries and units of a reader layer:
`top_source_share` (% of units whose largest score comes from the source) and
`positive_score_share` (% of the summed positive scores that the source gives).
"""
from __future__ import annotations

import pandas as pd
import torch

from ..models.components import Site
from ..models.execution import run
from ..stage_definition import StageDefinition
from .long_frame import long_frame
from .query_batches import query_batches

READER_KINDS = ("cross_attn", "mlp")
EMBEDDING = (-1, "embedding")


def _sources(gm) -> list[tuple[int, str]]:
    """The decoder input embedding, then every component in forward order."""
    return [EMBEDDING] + [(s.layer, s.kind) for s in gm.components("decoder")]


def mlp_read_scores(gm, layer: int, resid_pre: torch.Tensor, parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, d_ff) score of each part for each neuron, and the (B, d_ff) mask of active neurons (module docstring: gated MLPs)."""
    site = Site("decoder", layer, "mlp")
    normed = gm.adapter.linearised_norm(site, resid_pre, parts)
    scores = normed @ gm.adapter.mlp_in_weight("decoder", layer).T
    gate = gm.adapter.mlp_gate("decoder", layer)
    if gate is None:
        return scores, scores.sum(1) > 0  # ReLU: a neuron is active when its pre-activation is positive
    weight, act = gate
    g = act(gm.adapter.sublayer_norm(site)(resid_pre) @ weight.T)  # (B, d_ff), computed from the whole residual
    hidden = g * scores.sum(1)
    scores = scores * (g * hidden.sign())[:, None, :]
    return scores, hidden != 0


def cross_attention_read_scores(gm, layer: int, resid_pre: torch.Tensor, parts: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, H) score of each part for each head at its most-attended key, and (B, H) that key position.

    `batch` is the encoded QueryBatch (its encoder output gives the keys, its
    mask the padding); `resid_pre` (B, D) and `parts` (B, S, D) are at the
    ranking position. The adapter's attention recompute ranks the keys exactly
    as the model's softmax does (scaling, masks and any position bias).
    """
    site = Site("decoder", layer, "cross_attn")
    attn = gm.adapter.attention(site, batch)
    last = torch.tensor([-1])
    keys, _ = attn.keys_values(batch.encoder_hidden)  # (B, H, T, d)
    top = attn.scores(attn.query(resid_pre[:, None, :]), keys)[:, :, -1].argmax(-1)  # (B, H)
    normed = gm.adapter.linearised_norm(site, resid_pre, parts)  # (B, S, D)
    q_parts = attn.query_from_normed(normed[:, :, None, :], last)[..., -1, :]  # (B, S, H, d): linear in the parts
    return torch.einsum("bshd,bhd->bsh", q_parts, _key_at(keys.transpose(1, 2), top)) * attn.scale, top


def _key_at(keys: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """keys (B, T, H, d), position (B, H) -> (B, H, d)."""
    b, _, h, d = keys.shape
    index = position.view(b, 1, h, 1).expand(b, 1, h, d)
    return keys.gather(1, index).squeeze(1)


@torch.no_grad()
def reading(gm, texts: list[str], batch_size: int = 64, progress: bool = False) -> pd.DataFrame:
    """Shares of every earlier component in what each decoder MLP and cross-attention layer reads (module docstring)."""
    gm.adapter.require("encoder", "cross_attn", analysis="component reading")
    sources = _sources(gm)
    components = gm.components("decoder")
    readers = [s for s in components if s.kind in READER_KINDS]
    reads = [Site("decoder", 0, "", "resid_pre"), *components, *(r.with_facet("resid_pre") for r in readers)]
    top_counts = {r: torch.zeros(len(sources)) for r in readers}
    positive = {r: torch.zeros(len(sources)) for r in readers}
    for _, batch in query_batches(gm, texts, batch_size, progress=progress, desc="component reading"):
        values = run(gm, batch, reads=reads).values
        parts = torch.stack([values[reads[0]][:, -1]] + [values[c][:, -1] for c in components], dim=1)  # (B, S, d)
        for reader in readers:
            earlier = sources.index((reader.layer, reader.kind))
            resid_pre = values[reader.with_facet("resid_pre")][:, -1]
            if reader.kind == "mlp":
                scores, active = mlp_read_scores(gm, reader.layer, resid_pre, parts[:, :earlier])
                scores = scores.permute(0, 2, 1)[active]  # (active units, S)
            else:
                scores, _ = cross_attention_read_scores(gm, reader.layer, resid_pre, parts[:, :earlier], batch)
                scores = scores.permute(0, 2, 1).reshape(-1, earlier)  # (B*H units, S)
            if scores.numel():
                top_counts[reader][:earlier] += torch.bincount(scores.argmax(-1).cpu(), minlength=earlier).float()
                positive[reader][:earlier] += scores.clamp_min(0).sum(0).cpu()
    frames = []
    for name, table in (("top_source_share", top_counts), ("positive_score_share", positive)):
        shares = torch.stack([100.0 * t / t.sum().clamp_min(1e-12) for t in table.values()])
        frame = long_frame(shares, {"reader": range(len(readers)), "source": range(len(sources))}, metric=name)
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    reader, source = df.pop("reader"), df.pop("source")
    df.insert(0, "reader_layer", [readers[i].layer for i in reader])
    df.insert(1, "reader_component", [readers[i].kind for i in reader])
    # the embedding has no layer: empty, as "not applicable" is in every table
    df.insert(2, "source_layer", pd.array([sources[i][0] if sources[i] != EMBEDDING else None for i in source], dtype="Int64"))
    df.insert(3, "source_component", [sources[i][1] for i in source])
    # A source after its reader cannot be read: drop those structural zeros.
    later = [sources.index((r.layer, r.kind)) <= s for r, s in zip((readers[i] for i in reader), source.tolist())]
    return df[~pd.Series(later, index=df.index)].reset_index(drop=True)


def reading_by_stage(df: pd.DataFrame, stages: StageDefinition) -> pd.DataFrame:
    """Fig. 5 bars: shares by reader stage x type and source stage x type (reader layers weighted equally)."""
    stage_of = lambda layer: "embedding" if pd.isna(layer) else (stages.stage_of(int(layer)) or "unstaged")  # noqa: E731
    out = df.assign(reader_stage=df.reader_layer.map(stage_of), source_stage=df.source_layer.map(stage_of))
    reader, source = ["reader_stage", "reader_component"], ["source_stage", "source_component", "metric"]
    total = out.groupby(reader + source, as_index=False).value.sum()
    # Every reader layer of a stage weighs the same, including layers that give a source 0%.
    n_layers = out.groupby(reader).reader_layer.nunique().rename("n_layers").reset_index()
    total = total.merge(n_layers, on=reader)
    total["value"] = total.value / total.pop("n_layers")
    return total
