"""The one row-batched intervention executor: many interventions x many queries per forward pass.

    executor = InterventionExecutor(gm, groups, rows_per_forward=4096)        # groups: list[Intervention]
    for out in executor.row_logits(gm.batch(texts), Replacements(means=means)):
        out.intervention, out.item, out.logits        # (rows,), (rows,), (rows, vocab): row r = groups[out.intervention[r]] on query out.item[r]

Every (intervention, query) combination is one row: rows repeat their base
query (`QueryBatch.select`) and, inside one `run`, every written site becomes
`torch.where(mask, replacement, current)`, the mask selecting the rows (and,
for head or position specs, the slice) an intervention names. One memory
knob, `rows_per_forward`, bounds the rows of a forward pass.

The encoder runs once per base batch and is reused by every intervention
that writes only decoder sites; writes to `encoder.output` edit that cached
output directly (no hook, no encoder run). Only interventions inside encoder
layers rerun the encoder, on their own rows. Rows whose encoder position lies
beyond a query's length (`lengths`) are left out.

The rows are cut into chunks and handed to a `Backend` (`LocalBackend`: in
this process, in order); a distributed backend plugs in there.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import torch

from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import QueryBatch, run
from .backend import Backend, LocalBackend
from .spec import ENCODER_OUTPUT, Intervention, InterventionSpec
from .values import Replacements, without_encoder_output


@dataclass(frozen=True)
class RowChunk:
    """The rows of one forward pass: row r applies intervention `intervention[r]` to base query `item[r]`;
    `encoded` rows reuse the cached encoder output."""

    encoded: bool
    intervention: torch.Tensor
    item: torch.Tensor

    def __len__(self) -> int:
        return len(self.item)


@dataclass
class RowLogits:
    """First-step logits of a chunk of rows, with each row's intervention and base-query index."""

    intervention: torch.Tensor  # (rows,)
    item: torch.Tensor  # (rows,)
    logits: torch.Tensor  # (rows, vocab)


def _decoder_length(batch: QueryBatch) -> int:
    return 1 if batch.decoder_input_ids is None else batch.decoder_input_ids.shape[1]


def _slices(spec: InterventionSpec, d_head: int) -> tuple:
    t = slice(None) if spec.position is None else spec.position
    d = slice(None) if spec.head is None else slice(spec.head * d_head, (spec.head + 1) * d_head)
    return t, d


def _row_shape(gm, site: Site, rows: QueryBatch) -> tuple[int, int]:
    """(T, D) of one row's activation at `site`: T from the site's side, D the head concatenation or d_model."""
    length = _decoder_length(rows) if site.side == "decoder" else rows.input_ids.shape[1]
    adapter = gm.adapter
    return length, adapter.n_heads * adapter.d_head if site.facet == "heads" else adapter.d_model


def site_writes(gm, interventions: Sequence[Intervention], intervention_of_row: torch.Tensor, item_of_row: torch.Tensor,
                values: Replacements, rows: QueryBatch) -> dict:
    """The `run` writes of one forward pass: per site, `torch.where(mask, replacement, current)` over the fanned-out `rows`."""
    by_site: dict[Site, list[tuple[torch.Tensor, InterventionSpec]]] = defaultdict(list)
    for i in intervention_of_row.unique().tolist():
        hit = (intervention_of_row == i).nonzero()[:, 0]
        for spec in interventions[i].specs:
            by_site[spec.parsed].append((hit, spec))
    dtype, device = gm.hf_model.dtype, gm.device
    n, d_head = len(intervention_of_row), gm.adapter.d_head
    writes = {}
    for site, entries in by_site.items():
        shape = (n, *_row_shape(gm, site, rows))
        whole = all(spec.head is None and spec.position is None for _, spec in entries)
        # Whole-site writes need only a per-row mask (broadcast); slices need the full (rows, T, D) mask.
        mask = torch.zeros(n if whole else shape, dtype=torch.bool, device=device)
        for hit, spec in entries:
            mask[hit if whole else (hit, *_slices(spec, d_head))] = True
        if whole:
            mask = mask.view(n, 1, 1)
        kinds = {spec.value for _, spec in entries}
        if kinds == {"zero"}:
            replacement = torch.zeros((), dtype=dtype, device=device)
        elif kinds == {"mean"}:
            replacement = values.means[site].to(device, dtype)  # broadcast over rows
        elif len(kinds) == 1:
            replacement = values.lookup(kinds.pop())[site].index_select(0, item_of_row.to(device))
        else:  # several values at one site: each row (slice) gets its own
            replacement = torch.zeros(shape, dtype=dtype, device=device)
            for hit, spec in entries:
                if spec.value == "zero":
                    continue
                t, d = _slices(spec, d_head)
                cache = values.lookup(spec.value)[site]
                if spec.value == "mean":
                    source = cache.expand(shape[1:]).to(device, dtype)[t, d]
                else:
                    source = cache.index_select(0, item_of_row[hit].to(cache.device))[:, t, d].to(device, dtype)
                replacement[(hit, t, d)] = source
        writes[site] = partial(torch.where, mask, replacement)  # where(mask, replacement, current)
    return writes


class InterventionExecutor:
    """Runs interventions on base queries as batched rows and yields logits per row (see the module docstring).

    Example:
        >>> groups = [Intervention(()), Intervention.of(gm.components("decoder", ("mlp",)), "zero", method="zero")]
        >>> executor = InterventionExecutor(gm, groups, rows_per_forward=512)
        >>> for out in executor.row_logits(gm.batch(texts)):
        ...     logits[out.intervention, out.item] = out.logits
        >>> executor.row_logits(corrupted, Replacements(source=source_run(gm, clean, executor.sites).values), lengths=pair_lengths)
    """

    def __init__(self, gm, interventions: Sequence[Intervention], rows_per_forward: int = 4096, backend: Backend | None = None):
        if rows_per_forward < 1:
            raise GenIRError(f"rows_per_forward must be at least 1, got {rows_per_forward}")
        self.gm = gm
        self.interventions = list(interventions)
        self.rows_per_forward = rows_per_forward
        self.backend = backend if backend is not None else LocalBackend()
        sites = [[s.parsed for s in g.specs] for g in self.interventions]
        decoder_only = [all(s.side == "decoder" or s == ENCODER_OUTPUT for s in group) for group in sites]
        self.decoder_side = [i for i, ok in enumerate(decoder_only) if ok]
        self.encoder_side = [i for i, ok in enumerate(decoder_only) if not ok]

    @property
    def sites(self) -> list[Site]:
        """Every written site, in forward order."""
        return self.sites_with()

    def sites_with(self, *values: str) -> list[Site]:
        """Sites written with one of `values` (any value when none given), in forward order."""
        found = {s.parsed for g in self.interventions for s in g.specs if not values or s.value in values}
        return sorted(found, key=self.gm.adapter.order_key)

    def check_values(self, values: Replacements, n_items: int) -> None:
        """Every spec finds its replacement, and per-query caches have one entry per base query."""
        for i, group in enumerate(self.interventions):
            for spec in group.specs:
                cache = values.lookup(spec.value)
                if cache is None:
                    continue
                if spec.parsed not in cache:
                    field_name = {"source": "source", "mean": "means", "other-model": "other"}[spec.value]
                    raise GenIRError(f"intervention {i} ({spec}): value {spec.value!r} needs values.{field_name}[{spec.site}], which is missing")
                if spec.value != "mean" and cache[spec.parsed].shape[0] != n_items:
                    raise GenIRError(f"intervention {i} ({spec}): {spec.value} values hold {cache[spec.parsed].shape[0]} queries but the base batch has {n_items}")

    def plan(self, base: QueryBatch, lengths: torch.Tensor | None = None) -> list[RowChunk]:
        """The rows to run, intervention-major, decoder-side interventions first, cut every `rows_per_forward` rows."""
        n = len(base)
        lengths = torch.full((n,), base.input_ids.shape[1]) if lengths is None else torch.as_tensor(lengths).cpu()
        decoder_length = _decoder_length(base)
        items = torch.arange(n)
        chunks = []
        for encoded, group in ((True, self.decoder_side), (False, self.encoder_side)):
            parts_i, parts_q = [], []
            for i in group:
                keep = torch.ones(n, dtype=torch.bool)
                for spec in self.interventions[i].specs:
                    if spec.position is not None:
                        # A position beyond a query's length is padding: there is nothing to intervene on.
                        keep &= spec.position < (lengths if spec.parsed.side == "encoder" else torch.full_like(lengths, decoder_length))
                parts_q.append(items[keep])
                parts_i.append(torch.full((int(keep.sum()),), i, dtype=torch.long))
            if not parts_i:
                continue
            interventions, queries = torch.cat(parts_i), torch.cat(parts_q)
            for start in range(0, len(queries), self.rows_per_forward):
                stop = start + self.rows_per_forward
                chunks.append(RowChunk(encoded, interventions[start:stop], queries[start:stop]))
        return chunks

    def row_logits(self, base: QueryBatch, values: Replacements | None = None, lengths: torch.Tensor | None = None) -> Iterator[RowLogits]:
        """Logits of every (intervention, base query) row, one `RowLogits` per chunk, in plan order.

        `base` may come encoded (`gm.encode`); otherwise the encoder runs here,
        once, when any intervention is decoder-side.
        """
        values = values if values is not None else Replacements()
        self.check_values(values, len(base))
        chunks = self.plan(base, lengths)
        encoded = base
        if base.encoder_hidden is None and any(c.encoded for c in chunks):
            encoded = self.gm.encode(base)
        raw = without_encoder_output(base)
        return self.backend.map(partial(self.forward, encoded, raw, values), chunks)

    @torch.no_grad()
    def forward(self, encoded: QueryBatch, raw: QueryBatch, values: Replacements, chunk: RowChunk) -> RowLogits:
        """One forward pass over one chunk of rows."""
        rows = (encoded if chunk.encoded else raw).select(chunk.item)
        writes = site_writes(self.gm, self.interventions, chunk.intervention, chunk.item, values, rows)
        if chunk.encoded and ENCODER_OUTPUT in writes:
            # The cached encoder output is the encoder.output activation: edit it, no hook needed.
            rows = QueryBatch(rows.input_ids, rows.attention_mask, writes.pop(ENCODER_OUTPUT)(rows.encoder_hidden), rows.decoder_input_ids)
        return RowLogits(chunk.intervention, chunk.item, run(self.gm, rows, writes=writes).logits)
