"""The activation patching engine: one generic sweep over a list of patch specs, executed as batched rows.

    batch = tokenize_pairs(gm, pairs)
    table = sweep(gm, batch, target_specs(gm, "component"), direction="denoise", rows_per_forward=512)
    table = head_sweep(gm, batch)                  # thin specialisations: resid_sweep, component_sweep,
    table = encoder_position_sweep(gm, batch)      # head_sweep, encoder_position_sweep, encoder_layer_position_sweep

Every (patch spec, pair) combination is one row of a batched forward pass of
the one intervention executor (genir_mech.interventions.InterventionExecutor):
rows repeat the base query of their pair and each patched site is rewritten
as `torch.where(mask, source, current)`, so a forward pass carries as many
different patches as `rows_per_forward` allows (the memory budget). Per pair
batch, the source activations are cached once; the encoder output of both
queries is computed once and reused by every row that patches only the
decoder. Encoder-output patches need no hook at all: the cached encoder output
of their rows is edited directly. Only patches inside the encoder layers
rerun the encoder.

`direction="denoise"` patches clean activations into the corrupted run;
`"noise"` patches corrupted activations into the clean run. The result is a
tidy table with one row per pair, patch and metric: the patched value, the
clean and corrupted baselines and the normalised effect
(value - corrupted) / (clean - corrupted), 0 = corrupted run, 1 = clean run.
"""
from __future__ import annotations

from collections import defaultdict
from functools import partial

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import GenIRError
from ..interventions import ENCODER_OUTPUT, Intervention, InterventionExecutor, InterventionSpec, Replacements, source_run
from ..models.execution import QueryBatch
from ..vocabulary import PATCH_DIRECTIONS
from .metrics import METRICS, Metric
from .pairs import PairBatch, QueryPair, tokenize_pairs
from .specs import target_specs, validate_specs

DIRECTIONS = PATCH_DIRECTIONS
__all__ = ["DIRECTIONS", "ENCODER_OUTPUT", "source_and_base", "sweep", "sweep_target", "resid_sweep", "component_sweep", "head_sweep",
           "encoder_position_sweep", "encoder_layer_position_sweep"]


def source_and_base(batch: PairBatch, direction: str) -> tuple[QueryBatch, QueryBatch]:
    """(the run activations are taken from, the run they are patched into)."""
    if direction not in DIRECTIONS:
        raise GenIRError(f"unknown direction {direction!r}; choose denoise (clean into corrupted) or noise (corrupted into clean)")
    return (batch.clean, batch.corrupted) if direction == "denoise" else (batch.corrupted, batch.clean)


def patch_executor(gm, specs: list[InterventionSpec], rows_per_forward: int | None, backend=None, **executor_options) -> InterventionExecutor:
    """One single-spec intervention per patch spec, so each output row's intervention index is its spec's index in `specs`
    (`executor_options`: the executor's `max_memory` and `resume`)."""
    return InterventionExecutor(gm, [Intervention((spec,)) for spec in specs], rows_per_forward, backend, **executor_options)


def _score(logits: torch.Tensor, targets, metrics: dict[str, Metric]) -> dict[str, torch.Tensor]:
    out = {}
    for name, metric in metrics.items():
        value = metric(logits, targets)
        if value.shape != (logits.shape[0],):
            raise GenIRError(f"metric {name!r} returned shape {tuple(value.shape)}; a metric returns one value per row ({logits.shape[0]})")
        out[name] = value.detach().float().cpu()
    return out


@torch.no_grad()
def _sweep_pair_batch(gm, batch: PairBatch, executor: InterventionExecutor, direction: str, metrics: dict[str, Metric], bar) -> dict:
    source, base = source_and_base(batch, direction)
    source_values = source_run(gm, source, executor.sites_with("source"))
    # The base queries are encoded once here: the executor reuses them, and the corrupted baseline comes from them.
    base = gm.encode(base) if executor.decoder_side else base
    rows = executor.row_logits(base, Replacements(source=source_values.values), lengths=batch.lengths)
    # The executor's prefix pass (when its rows resume) ran the unpatched base model: its logits are the baseline.
    base_logits = executor.unpatched_logits if executor.unpatched_logits is not None else gm.logits(base)
    base_scores = _score(base_logits, batch.targets, metrics)
    source_scores = _score(source_values.logits, batch.targets, metrics)
    spec_out, pair_out, values = [], [], defaultdict(list)
    for out in rows:
        for name, value in _score(out.logits, batch.targets.select(out.item), metrics).items():
            values[name].append(value)
        spec_out.append(out.intervention)
        pair_out.append(out.item)
        if bar is not None:
            bar.update(len(out.item))
    clean_scores, corrupted_scores = (source_scores, base_scores) if direction == "denoise" else (base_scores, source_scores)
    return {
        "spec": torch.cat(spec_out) if spec_out else torch.empty(0, dtype=torch.long),
        "pair": torch.cat(pair_out) if pair_out else torch.empty(0, dtype=torch.long),
        "values": {k: torch.cat(v) for k, v in values.items()},
        "clean": clean_scores,
        "corrupted": corrupted_scores,
    }


def _table(batch: PairBatch, specs: list[InterventionSpec], direction: str, part: dict) -> pd.DataFrame:
    spec_idx, pair_idx = part["spec"].numpy(), part["pair"].numpy()
    axes = pd.DataFrame([s.axes() for s in specs]).iloc[spec_idx].reset_index(drop=True)
    axes["layer"] = axes["layer"].astype("Int64")
    axes["head"] = axes["head"].astype("Int64")
    axes["position"] = axes["position"].astype("Int64")
    axes.insert(0, "pair_id", [batch.pairs[i].pair_id for i in pair_idx])
    axes.insert(1, "decides", [batch.pairs[i].decides for i in pair_idx])
    axes.insert(2, "direction", direction)
    encoder_pos = (axes["side"] == "encoder") & axes["position"].notna()
    positions = axes["position"].fillna(0).astype(int).to_numpy()
    axes["clean_token"] = np.where(encoder_pos, [batch.clean_tokens[p][min(t, batch.width - 1)] for p, t in zip(pair_idx, positions)], None)
    axes["corrupted_token"] = np.where(encoder_pos, [batch.corrupted_tokens[p][min(t, batch.width - 1)] for p, t in zip(pair_idx, positions)], None)
    frames = []
    for name, value in part["values"].items():
        clean, corrupted = part["clean"][name].numpy()[pair_idx], part["corrupted"][name].numpy()[pair_idx]
        value = value.numpy()
        span = clean - corrupted
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = np.where(span != 0, (value - corrupted) / span, np.nan)
        frames.append(axes.assign(metric=name, value=value, clean=clean, corrupted=corrupted, normalised=normalised))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sweep(
    gm,
    pairs: PairBatch | list[QueryPair],
    specs: list[InterventionSpec],
    *,
    direction: str = "denoise",
    metrics: dict[str, Metric] | None = None,
    rows_per_forward: int | None = 512,
    pairs_per_batch: int = 64,
    align: str | None = None,
    progress: bool = False,
    backend=None,
    **executor_options,
) -> pd.DataFrame:
    """Run every spec on every pair; returns the tidy per-pair table described in the module docstring.

    `rows_per_forward` bounds the rows (patches x pairs) of one forward pass;
    `pairs_per_batch` bounds how many pairs' source activations are cached at once;
    `backend` (default: in this process) runs the executor's chunks of rows;
    `executor_options` go to the executor (`max_memory`, used when rows_per_forward is None; `resume`).
    """
    if (rows_per_forward is not None and rows_per_forward < 1) or pairs_per_batch < 1:
        raise GenIRError("rows_per_forward and pairs_per_batch must be at least 1")
    metrics = dict(metrics or METRICS)
    batch = pairs if isinstance(pairs, PairBatch) else tokenize_pairs(gm, pairs, align)
    if not specs:
        raise GenIRError("an empty sweep: no patch specs to run")
    validate_specs(gm, specs)
    for i, spec in enumerate(specs):
        if spec.value not in ("source", "zero"):
            raise GenIRError(f"patch spec {i} ({spec}): a patching sweep writes source-run activations (or zeros); {spec.value} values are ablations (analyses.ablation)")
    source_and_base(batch, direction)  # validates the direction before any work
    executor = patch_executor(gm, specs, rows_per_forward, backend, **executor_options)
    frames = []
    n_rows = sum(len(chunk) for chunk in executor.plan(batch.corrupted, batch.lengths))
    bar = tqdm(total=n_rows, desc=f"patching ({direction})", unit="patch", disable=not progress)
    for start in range(0, len(batch), pairs_per_batch):
        part_batch = batch.select(list(range(start, min(start + pairs_per_batch, len(batch)))))
        part = _sweep_pair_batch(gm, part_batch, executor, direction, metrics, bar)
        frames.append(_table(part_batch, specs, direction, part))
    bar.close()
    return pd.concat(frames, ignore_index=True)


def sweep_target(gm, pairs: PairBatch | list[QueryPair], target: str, *, kinds: tuple[str, ...] | None = None, align: str | None = None, **kwargs) -> pd.DataFrame:
    """`sweep` over one of the standard targets of `target_specs` (positions read off the tokenized pairs)."""
    batch = pairs if isinstance(pairs, PairBatch) else tokenize_pairs(gm, pairs, align)
    return sweep(gm, batch, target_specs(gm, target, encoder_positions=batch.width, decoder_positions=batch.decoder_length, kinds=kinds), **kwargs)


resid_sweep = partial(sweep_target, target="resid")
component_sweep = partial(sweep_target, target="component")
head_sweep = partial(sweep_target, target="head")
encoder_position_sweep = partial(sweep_target, target="encoder-position")
encoder_layer_position_sweep = partial(sweep_target, target="encoder-layer-position")
