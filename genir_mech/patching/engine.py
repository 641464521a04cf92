"""The activation patching engine: one generic sweep over a list of patch specs, executed as batched rows.

    batch = tokenize_pairs(gm, pairs)
    table = sweep(gm, batch, target_specs(gm, "component"), direction="denoise", rows_per_forward=512)
    table = head_sweep(gm, batch)                  # thin specialisations: resid_sweep, component_sweep,
    table = encoder_position_sweep(gm, batch)      # head_sweep, encoder_position_sweep, encoder_layer_position_sweep

Every (patch spec, pair) combination is one row of a batched forward pass:
rows repeat the base query of their pair and, inside one `run`, each patched
site is rewritten as `torch.where(row_mask, source, current)`, so a forward
pass carries as many different patches as `rows_per_forward` allows (the
memory budget). Per pair batch, the source activations are cached once; the
encoder output of both queries is computed once and reused by every row that
patches only the decoder. Encoder-output patches need no hook at all: the
cached encoder output of their rows is edited directly. Only patches inside
the encoder layers rerun the encoder.

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
from ..models.components import Site
from ..models.execution import QueryBatch, run
from .metrics import METRICS, Metric
from .pairs import PairBatch, QueryPair, tokenize_pairs
from .specs import PatchSpec, target_specs, validate_specs

DIRECTIONS = ("denoise", "noise")
ENCODER_OUTPUT = Site.parse("encoder.output")


def source_and_base(batch: PairBatch, direction: str) -> tuple[QueryBatch, QueryBatch]:
    """(the run activations are taken from, the run they are patched into)."""
    if direction not in DIRECTIONS:
        raise GenIRError(f"unknown direction {direction!r}; choose denoise (clean into corrupted) or noise (corrupted into clean)")
    return (batch.clean, batch.corrupted) if direction == "denoise" else (batch.corrupted, batch.clean)


def patch_mask(shape: tuple[int, ...], entries: list[tuple[torch.Tensor, PatchSpec]], d_head: int, device) -> torch.Tensor:
    """Boolean (rows, T, D) mask: True where a row's spec replaces the activation (its head slice, its position)."""
    mask = torch.zeros(shape, dtype=torch.bool, device=device)
    for rows, spec in entries:
        t = slice(None) if spec.position is None else spec.position
        d = slice(None) if spec.head is None else slice(spec.head * d_head, (spec.head + 1) * d_head)
        mask[rows, t, d] = True
    return mask


def row_writes(gm, specs: list[PatchSpec], spec_of_row: torch.Tensor, pair_of_row: torch.Tensor, source_cache: dict[Site, torch.Tensor]) -> dict:
    """The `run` writes for one forward pass: per patched site, replace each row's slice with its pair's source activation."""
    by_site: dict[Site, list[tuple[torch.Tensor, PatchSpec]]] = defaultdict(list)
    for si in spec_of_row.unique().tolist():
        spec = specs[si]
        site = spec.parsed
        if site == ENCODER_OUTPUT:
            continue  # handled by editing the cached encoder output (see patch_encoder_output)
        by_site[site].append(((spec_of_row == si).nonzero()[:, 0], spec))
    writes = {}
    for site, entries in by_site.items():
        source = source_cache[site].index_select(0, pair_of_row)
        mask = patch_mask(tuple(source.shape), entries, gm.adapter.d_head, source.device)
        writes[site] = partial(torch.where, mask, source)  # where(mask, source, current)
    return writes


def patch_encoder_output(batch: QueryBatch, specs: list[PatchSpec], spec_of_row: torch.Tensor, pair_of_row: torch.Tensor, source_hidden: torch.Tensor) -> QueryBatch:
    """Rows whose spec is `encoder.output` get the source encoder output at their position, with no hook and no encoder run."""
    entries = [((spec_of_row == si).nonzero()[:, 0], specs[si]) for si in spec_of_row.unique().tolist() if specs[si].parsed == ENCODER_OUTPUT]
    if not entries:
        return batch
    source = source_hidden.index_select(0, pair_of_row)
    mask = patch_mask(tuple(source.shape), entries, 0, source.device)
    return QueryBatch(batch.input_ids, batch.attention_mask, torch.where(mask, source, batch.encoder_hidden), batch.decoder_input_ids)


def _valid_rows(specs: list[PatchSpec], spec_indices: list[int], lengths: torch.Tensor, decoder_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(spec, pair) rows, spec-major, leaving out positions that are padding for a pair."""
    spec_rows, pair_rows = [], []
    pair_index = torch.arange(len(lengths))
    for si in spec_indices:
        spec = specs[si]
        limit = lengths if spec.parsed.side == "encoder" else torch.full_like(lengths, decoder_length)
        keep = pair_index if spec.position is None else pair_index[spec.position < limit]
        spec_rows.append(torch.full_like(keep, si))
        pair_rows.append(keep)
    if not spec_rows:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(spec_rows), torch.cat(pair_rows)


def _score(logits: torch.Tensor, targets, metrics: dict[str, Metric]) -> dict[str, torch.Tensor]:
    out = {}
    for name, metric in metrics.items():
        value = metric(logits, targets)
        if value.shape != (logits.shape[0],):
            raise GenIRError(f"metric {name!r} returned shape {tuple(value.shape)}; a metric returns one value per row ({logits.shape[0]})")
        out[name] = value.detach().float().cpu()
    return out


@torch.no_grad()
def _sweep_pair_batch(gm, batch: PairBatch, specs: list[PatchSpec], direction: str, metrics: dict[str, Metric], rows_per_forward: int, bar) -> dict:
    source, base = source_and_base(batch, direction)
    decoder_specs = [i for i, s in enumerate(specs) if s.parsed.side == "decoder" or s.parsed == ENCODER_OUTPUT]
    encoder_specs = [i for i, s in enumerate(specs) if i not in set(decoder_specs)]
    cache, source_run, base_enc = {}, None, None
    if decoder_specs:
        # The encoder runs once per query; every decoder-only row reuses these outputs.
        source_enc, base_enc = gm.encode(source), gm.encode(base)
        decoder_sites = sorted({specs[i].parsed for i in decoder_specs} - {ENCODER_OUTPUT}, key=gm.adapter.order_key)
        source_run = run(gm, source_enc, reads=decoder_sites)
        cache.update({**source_run.values, ENCODER_OUTPUT: source_enc.encoder_hidden})
    if encoder_specs:
        source_run = run(gm, source, reads=sorted({specs[i].parsed for i in encoder_specs}, key=gm.adapter.order_key))
        cache.update(source_run.values)
    base_scores = _score(gm.logits(base_enc if base_enc is not None else base), batch.targets, metrics)
    source_scores = _score(source_run.logits, batch.targets, metrics)
    decoder_length = batch.decoder_length

    spec_out, pair_out, values = [], [], defaultdict(list)
    for group, base_batch in ((decoder_specs, base_enc), (encoder_specs, base)):
        if not group:
            continue
        spec_of_rows, pair_of_rows = _valid_rows(specs, group, batch.lengths, decoder_length)
        for start in range(0, len(spec_of_rows), rows_per_forward):
            spec_of_row, pair_of_row = spec_of_rows[start : start + rows_per_forward], pair_of_rows[start : start + rows_per_forward]
            rows = base_batch.select(pair_of_row)
            if base_batch.encoder_hidden is not None:
                rows = patch_encoder_output(rows, specs, spec_of_row, pair_of_row, cache[ENCODER_OUTPUT])
            result = run(gm, rows, writes=row_writes(gm, specs, spec_of_row, pair_of_row, cache))
            for name, value in _score(result.logits, batch.targets.select(pair_of_row), metrics).items():
                values[name].append(value)
            spec_out.append(spec_of_row)
            pair_out.append(pair_of_row)
            if bar is not None:
                bar.update(len(spec_of_row))
    clean_scores, corrupted_scores = (source_scores, base_scores) if direction == "denoise" else (base_scores, source_scores)
    return {
        "spec": torch.cat(spec_out) if spec_out else torch.empty(0, dtype=torch.long),
        "pair": torch.cat(pair_out) if pair_out else torch.empty(0, dtype=torch.long),
        "values": {k: torch.cat(v) for k, v in values.items()},
        "clean": clean_scores,
        "corrupted": corrupted_scores,
    }


def _table(batch: PairBatch, specs: list[PatchSpec], direction: str, part: dict) -> pd.DataFrame:
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
    specs: list[PatchSpec],
    *,
    direction: str = "denoise",
    metrics: dict[str, Metric] | None = None,
    rows_per_forward: int = 512,
    pairs_per_batch: int = 64,
    align: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every spec on every pair; returns the tidy per-pair table described in the module docstring.

    `rows_per_forward` bounds the rows (patches x pairs) of one forward pass;
    `pairs_per_batch` bounds how many pairs' source activations are cached at once.
    """
    if rows_per_forward < 1 or pairs_per_batch < 1:
        raise GenIRError("rows_per_forward and pairs_per_batch must be at least 1")
    metrics = dict(metrics or METRICS)
    batch = pairs if isinstance(pairs, PairBatch) else tokenize_pairs(gm, pairs, align)
    if not specs:
        raise GenIRError("an empty sweep: no patch specs to run")
    validate_specs(gm, specs)
    source_and_base(batch, direction)  # validates the direction before any work
    frames = []
    n_rows = sum(len(batch) if s.position is None or s.parsed.side == "decoder" else int((batch.lengths > s.position).sum()) for s in specs)
    bar = tqdm(total=n_rows, desc=f"patching ({direction})", unit="patch", disable=not progress)
    for start in range(0, len(batch), pairs_per_batch):
        part_batch = batch.select(list(range(start, min(start + pairs_per_batch, len(batch)))))
        part = _sweep_pair_batch(gm, part_batch, specs, direction, metrics, rows_per_forward, bar)
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
