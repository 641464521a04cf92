"""How much each component writes into the residual stream, and in which direction (paper Fig. 3).

    df = contributions(gm, texts, query_ids, stages=StageDefinition.parse("priming=0-2,bridging=3-5,interaction=6-7"))
    df.groupby(["layer", "component", "metric"]).value.mean()

Columns: side, layer, component, query_id, metric, value. Metrics, at the
decoder step that ranks the documents:

- `ratio`: ||c_out|| / ||r_end - r_begin||, the component's output norm over
  the norm of everything its layer added to the residual stream;
- `cos_residual`: cosine of c_out with the residual stream *entering its
  sublayer* (what the component reads);
- `cos_resid_post` (only with `paper_cosine=True`): cosine of c_out with the
  residual stream *after its layer*, the definition of the paper's code
  (`get_cos` in eval_residual_rank.py: `cosine_similarity(comp, resid_post)`),
  which the stage localiser uses for the interaction stage's "the MLPs turn
  against the residual";
- `cos_priming` (only with `stages`): cosine of c_out with the mean output of the
  MLPs of the first stage on the same query (the paper's Stage-I MLPs).

The two residual cosines differ most where a component writes much: the
residual after the layer contains the component's own output, which pulls
`cos_resid_post` toward +1; a negative `cos_resid_post` is therefore the
stronger statement.

With `view` (a `retrieval.steps.StepView` of the same queries) the decoder
is teacher-forced to the view's step of a multi-token docid and the metrics
are read at that step's position; without it, at the ranking step of atomic
docids (step 0).

Encoder layers (`sides=("encoder", "decoder")`) give the same ratio and cosine
per query token, averaged over the non-padding tokens of each query. A
decoder-only model has only the decoder side; its ranking step is the last
query position.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..errors import GenIRError
from ..models.components import SIDES, Site
from ..models.execution import run
from ..stage_definition import StageDefinition
from .long_frame import long_frame
from .query_batches import check_view, query_batches


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity along the last axis, safe for zero vectors."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)


def _sites(gm, side: str) -> tuple[list[Site], list[Site], list[Site], list[Site]]:
    layers, kinds = range(gm.n_layers(side)), gm.adapter.kinds(side)
    outs = [Site(side, l, k) for l in layers for k in kinds]
    pres = [Site(side, l, k, "resid_pre") for l in layers for k in kinds]
    begins = [Site(side, l, "", "resid_pre") for l in layers]
    ends = [Site(side, l, "", "resid_post") for l in layers]
    return outs, pres, begins, ends


def _stack(values, sites, n_layers, n_kinds):
    """(B, T, d) per site -> (B, T, L, K, d) or (B, T, L, d)."""
    stacked = torch.stack([values[s] for s in sites], dim=2)
    return stacked if len(sites) == n_layers else stacked.unflatten(2, (n_layers, n_kinds))


def _side_metrics(gm, values, side: str, mask: torch.Tensor, priming: list[int] | None, paper_cosine: bool = False) -> dict[str, torch.Tensor]:
    """(B, L, K) tensors of every metric for one side, averaged over the positions in `mask` (B, T)."""
    outs, pres, begins, ends = _sites(gm, side)
    n_layers, kinds = gm.n_layers(side), gm.adapter.kinds(side)
    out = _stack(values, outs, n_layers, len(kinds))
    pre = _stack(values, pres, n_layers, len(kinds))
    post = _stack(values, ends, n_layers, 1)
    delta = (post - _stack(values, begins, n_layers, 1)).unsqueeze(3)
    per_token = {
        "ratio": out.norm(dim=-1) / delta.norm(dim=-1).clamp_min(1e-12),
        "cos_residual": cosine(out, pre),
    }
    if paper_cosine:
        per_token["cos_resid_post"] = cosine(out, post.unsqueeze(3))
    if priming is not None:
        mlp_mean = out[:, :, priming, kinds.index("mlp")].mean(2, keepdim=True).unsqueeze(3)
        per_token["cos_priming"] = cosine(out, mlp_mean)
    weights = mask.to(out.dtype)[:, :, None, None]
    return {name: (v * weights).sum(1) / weights.sum(1) for name, v in per_token.items()}


@torch.no_grad()
def contributions(
    gm,
    texts: list[str],
    query_ids: list[str],
    stages: StageDefinition | None = None,
    batch_size: int = 64,
    sides: tuple[str, ...] = ("decoder",),
    progress: bool = False,
    view=None,
    paper_cosine: bool = False,
) -> pd.DataFrame:
    """Contribution ratio and cosines of every component, per query (see the module docstring);
    `paper_cosine`: also `cos_resid_post`, the cosine with the residual after the layer (the paper's definition)."""
    if len(texts) != len(query_ids):
        raise GenIRError(f"{len(texts)} query texts but {len(query_ids)} query ids")
    check_view(view, texts)
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        raise GenIRError(f"unknown side(s) {unknown} in sides=; choose from {', '.join(gm.adapter.sides)}")
    gm.adapter.require(*sides, analysis=f"contributions over sides={tuple(sides)}")
    priming = None
    if stages is not None:
        priming = list(stages.check(gm.n_layers("decoder")).stages[0].layers)
        if not priming:
            raise GenIRError(f"the first stage {stages.stages[0].name!r} has no layers; cos_priming needs its MLPs")
    reads = [s for side in sides for group in _sites(gm, side) for s in group]
    frames = []
    # The encoder must run inside the trace only when its own sites are read.
    decoder_inputs = None if view is None else view.decoder_inputs
    for rows, batch in query_batches(gm, texts, batch_size, encode="encoder" not in sides, progress=progress, desc="contributions", decoder_inputs=decoder_inputs):
        values = run(gm, batch, reads=reads).values
        for side in sides:
            if side == "decoder":
                steps = values[Site("decoder", 0, "", "resid_pre")].shape[1]
                mask = torch.zeros(len(batch), steps, dtype=torch.bool, device=gm.device)
                mask[:, -1] = True  # the decoder step that ranks the documents
            else:
                mask = batch.attention_mask.bool()
            metrics = _side_metrics(gm, values, side, mask, priming if side == "decoder" else None, paper_cosine)
            for name, value in metrics.items():
                frame = long_frame(value, {"query_id": query_ids[rows], "layer": range(gm.n_layers(side)), "component": gm.adapter.kinds(side)}, metric=name)
                frame.insert(0, "side", side)
                frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    return df[["side", "layer", "component", "query_id", "metric", "value"]]
