"""The one row-batched intervention executor: many interventions x many queries per forward pass.

    executor = InterventionExecutor(gm, groups)                           # groups: list[Intervention]; rows per pass from memory
    for out in executor.row_logits(gm.batch(texts), Replacements(means=means)):
        out.intervention, out.item, out.logits        # (rows,), (rows,), (rows, vocab): row r = groups[out.intervention[r]] on query out.item[r]

Every (intervention, query) combination is one row: rows repeat their base
query (`QueryBatch.select`) and, inside one `run`, every written site becomes
`torch.where(mask, replacement, current)`, the mask selecting the rows (and,
for head or position specs, the slice) an intervention names. One memory
knob bounds the rows of a forward pass: `max_memory` bytes of activations
(default: a quarter of the available memory, see `memory`), or a fixed
`rows_per_forward`.

The encoder runs once per base batch and is reused by every intervention
that writes only decoder sites; writes to `encoder.output` edit that cached
output directly (no hook, no encoder run). Only interventions inside encoder
layers rerun the encoder, on their own rows. Rows whose encoder position lies
beyond a query's length (`lengths`) are left out.

Prefix resume: an intervention whose first written site is in layer L of a
side leaves layers 0..L-1 of that side exactly as in the unpatched run. Their
output is read once per base batch (`block_outputs`) and the intervention's
rows start at layer L (`Resume`: nnsight skips the earlier blocks and hands
on the cached output, position biases included); the sites from L on are
written by the same `run`, so the intervention graph is unchanged. Decoder
interventions resume in the decoder; encoder-layer interventions resume in the
encoder (the decoder then runs whole, as the encoder output changed). Rows
are sorted by first layer and cut into segments, each resuming from its lowest
row's layer; the cut minimises `pass_cost` (rows x layers plus a fixed cost
per layer and per pass, so tiny per-layer groups are merged rather than run
as many small passes). By default a side resumes when that beats one
segment from layer 0 plus the unpatched prefix pass.

A write to the site a block returns (T5's `resid_post`, see
`adapter.block_output_is_resid_post`) is applied to that block's cached
output, and its rows resume one layer later: a layer sweep runs none of the
layers it overwrites. The prefix pass runs the whole model, so its logits are
kept as the unpatched baseline (`unpatched_logits`): a sweep needs no
separate base pass.

Cross-attention keys and values depend on the encoder output alone: where the
adapter can hand them on (`adapter.cross_keys_values`, T5 family), they are
projected once per base query and every row receives its query's copy of the
layers it runs; rows that rewrite `encoder.output` project their own.

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
from ..models.execution import UNPATCHED_LOGITS, QueryBatch, Resume, block_outputs, run
from .backend import Backend, LocalBackend
from .memory import rows_within
from .spec import ENCODER_OUTPUT, Intervention, InterventionSpec
from .values import Replacements, without_encoder_output


@dataclass(frozen=True)
class RowChunk:
    """The rows of one forward pass: row r applies intervention `intervention[r]` to base query `item[r]`;
    `encoded` rows reuse the cached encoder output; `resume_layer` > 0: the rows start at that layer of the
    decoder (encoded rows) or of the encoder (the others), from the unpatched run's prefix."""

    encoded: bool
    intervention: torch.Tensor
    item: torch.Tensor
    resume_layer: int = 0

    def __len__(self) -> int:
        return len(self.item)


@dataclass
class RowLogits:
    """First-step logits of a chunk of rows, with each row's intervention and base-query index."""

    intervention: torch.Tensor  # (rows,)
    item: torch.Tensor  # (rows,)
    logits: torch.Tensor  # (rows, vocab)


# Cost of a forward pass in row-layers (one row through one layer), for choosing where chunks resume. Besides its rows,
# each layer a pass runs costs about LAYER_OVERHEAD row-layers whatever its rows (reading the layer's weights, module
# calls), and each pass PASS_OVERHEAD more (trace set-up, embeddings, unembedding): so a few rows per layer group are
# cheaper run together from the lowest layer than as many small passes. Both were fitted to the T5-large-shape
# component sweep on the 2-core benchmark CPU (bench/bench_patching.py), where per-layer passes of 3 rows ran 3x slower.
LAYER_OVERHEAD = 16
PASS_OVERHEAD = 64


def pass_cost(rows: int, layers: int, limit: int) -> float:
    """Row-layers of running `rows` rows through `layers` layers, `limit` rows per pass."""
    passes = -(-rows // limit)
    return passes * (PASS_OVERHEAD + layers * LAYER_OVERHEAD) + rows * layers


def _decoder_length(gm, batch: QueryBatch) -> int:
    """Positions of the decoder side: a decoder-only model's decoder reads the whole prompt; an encoder-decoder's
    decoder reads its decoder inputs (one start token when none are given)."""
    if "encoder" not in gm.adapter.sides:
        return batch.input_ids.shape[1]
    return 1 if batch.decoder_input_ids is None else batch.decoder_input_ids.shape[1]


def _slices(spec: InterventionSpec, d_head: int) -> tuple:
    t = slice(None) if spec.position is None else spec.position
    d = slice(None) if spec.head is None else slice(spec.head * d_head, (spec.head + 1) * d_head)
    return t, d


def _row_shape(gm, site: Site, rows: QueryBatch) -> tuple[int, int]:
    """(T, D) of one row's activation at `site`: T from the site's side, D the head concatenation or d_model."""
    length = _decoder_length(gm, rows) if site.side == "decoder" else rows.input_ids.shape[1]
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
        >>> executor = InterventionExecutor(gm, groups, max_memory=2 * 2**30)     # or rows_per_forward=512
        >>> for out in executor.row_logits(gm.batch(texts)):
        ...     logits[out.intervention, out.item] = out.logits
        >>> executor.row_logits(corrupted, Replacements(source=source_run(gm, clean, executor.sites).values), lengths=pair_lengths)
    """

    def __init__(self, gm, interventions: Sequence[Intervention], rows_per_forward: int | None = None, backend: Backend | None = None, *,
                 max_memory: int | None = None, resume: bool | None = None):
        if rows_per_forward is not None and rows_per_forward < 1:
            raise GenIRError(f"rows_per_forward must be at least 1, got {rows_per_forward}")
        if max_memory is not None and max_memory < 1:
            raise GenIRError(f"max_memory must be a positive number of bytes, got {max_memory}")
        self.gm = gm
        self.interventions = list(interventions)
        self.rows_per_forward = rows_per_forward
        self.max_memory = max_memory
        self.resume = resume  # None: where it saves work; True: always (where the adapter can); False: never
        self.backend = backend if backend is not None else LocalBackend()
        sites = [[s.parsed for s in g.specs] for g in self.interventions]
        decoder_only = [all(s.side == "decoder" or s == ENCODER_OUTPUT for s in group) for group in sites]
        self.decoder_side = [i for i, ok in enumerate(decoder_only) if ok]
        self.encoder_side = [i for i, ok in enumerate(decoder_only) if not ok]
        self.first_layer = [self._first_layer(group, ok) for group, ok in zip(sites, decoder_only)]
        self.unpatched_logits: torch.Tensor | None = None  # set by `row_logits` when its prefix pass ran

    def _first_layer(self, sites: list[Site], encoded: bool) -> int:
        """The first layer of the resumed side (decoder for encoded rows, else encoder) that has to run: the layer of the
        first write, or the one after it when that write is to the block's own output (applied to the cached output)."""
        side = "decoder" if encoded else "encoder"
        if encoded and ENCODER_OUTPUT in sites:
            return 0  # every decoder layer reads the encoder output
        n = self.gm.adapter.n_layers(side)
        return min((self._layer_to_run(s, n) for s in sites if s.side == side), default=n)

    def _layer_to_run(self, site: Site, n: int) -> int:
        if site.layer < 0:
            return n
        return site.layer + 1 if self._is_block_output(site) else site.layer

    def _rewrites_encoder_output(self, chunk: RowChunk) -> bool:
        return any(ENCODER_OUTPUT in self.interventions[i].sites for i in chunk.intervention.unique().tolist())

    def _is_block_output(self, site: Site) -> bool:
        """Whether `site` is what its block returns (so a write to it can be applied to the block's cached output)."""
        adapter = self.gm.adapter
        block = Site(site.side, site.layer, "", "resid_post")
        return (site.layer >= 0 and adapter.block_output_is_resid_post and adapter.block_path(site.side, site.layer) is not None
                and adapter.hook(site) == adapter.hook(block))

    def _pieces(self, side: str, kept: dict[int, torch.Tensor], order: list[int], limit: int, n_items: int) -> list[tuple[list[int], int]]:
        """Segments of `order` (interventions sorted by first layer) with the layer each resumes from: the cheapest cut by
        `pass_cost` at layer boundaries, or one segment from layer 0 when resuming does not pay for its prefix pass (or is off)."""
        adapter = self.gm.adapter
        n = adapter.n_layers(side)
        plain = [(order, 0)]
        by_layer: dict[int, list[int]] = defaultdict(list)
        for i in order:
            by_layer[self.first_layer[i]].append(i)
        layers = sorted(by_layer)
        if self.resume is False or adapter.block_path(side, 0) is None or layers[-1:] in ([], [0]):
            return plain
        rows = [sum(len(kept[i]) for i in by_layer[layer]) for layer in layers]
        # best[b]: cheapest cost of the first b layer groups cut into segments, each resuming from its lowest layer.
        best, cut = [0.0] + [float("inf")] * len(layers), [0] * (len(layers) + 1)
        for b in range(1, len(layers) + 1):
            total = 0
            for a in range(b - 1, -1, -1):
                total += rows[a]
                cost = best[a] + pass_cost(total, n - layers[a], limit)
                if cost < best[b]:
                    best[b], cut[b] = cost, a
        segments, b = [], len(layers)
        while b > 0:
            segments.append(([i for layer in layers[cut[b]:b] for i in by_layer[layer]], layers[cut[b]]))
            b = cut[b]
        segments.reverse()
        if self.resume:
            return segments
        # The prefix pass runs the side's layers once per base query (and, from the encoder, the decoder too).
        prefix = pass_cost(n_items, sum(adapter.n_layers(s) for s in adapter.sides[adapter.sides.index(side):]), limit)
        return segments if best[-1] + prefix < pass_cost(sum(rows), n, limit) else plain

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
        """The rows to run: decoder-side interventions first, then by resume layer, intervention-major within a layer,
        cut every `rows_per_forward` rows (default: as many as `max_memory` holds)."""
        n = len(base)
        lengths = torch.full((n,), base.input_ids.shape[1]) if lengths is None else torch.as_tensor(lengths).cpu()
        decoder_length = _decoder_length(self.gm, base)
        items = torch.arange(n)
        chunks = []
        for encoded, group in ((True, self.decoder_side), (False, self.encoder_side)):
            kept = {}
            for i in group:
                keep = torch.ones(n, dtype=torch.bool)
                for spec in self.interventions[i].specs:
                    if spec.position is not None:
                        # A position beyond a query's length is padding: there is nothing to intervene on.
                        keep &= spec.position < (lengths if spec.parsed.side == "encoder" else torch.full_like(lengths, decoder_length))
                kept[i] = items[keep]
            if not kept:
                continue
            side = "decoder" if encoded else "encoder"
            limit = self.rows_per_forward or rows_within(self.gm, base, encoded, self.max_memory)
            order = sorted(group, key=lambda i: self.first_layer[i])  # stable: intervention-major within a layer
            for members, layer in self._pieces(side, kept, order, limit, n):
                interventions = torch.cat([torch.full((len(kept[i]),), i, dtype=torch.long) for i in members])
                queries = torch.cat([kept[i] for i in members])
                first = torch.tensor([self.first_layer[i] for i in members]).repeat_interleave(torch.tensor([len(kept[i]) for i in members]))
                for start in range(0, len(queries), limit):
                    # A chunk resumes from its lowest row's layer: the layers between it and a row's own first layer recompute unpatched values.
                    resume_layer = max(layer, int(first[start])) if layer > 0 else 0
                    chunks.append(RowChunk(encoded, interventions[start : start + limit], queries[start : start + limit], resume_layer))
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
        shared = None
        if encoded.encoder_hidden is not None and any(c.encoded and not self._rewrites_encoder_output(c) for c in chunks):
            shared = self.gm.adapter.cross_keys_values(encoded.encoder_hidden)
        prefix = self.prefix(encoded, raw, chunks)
        self.unpatched_logits = prefix.pop(UNPATCHED_LOGITS, None)
        return self.backend.map(partial(self.forward, encoded, raw, values, prefix, shared), chunks)

    def prefix(self, encoded: QueryBatch, raw: QueryBatch, chunks: Sequence[RowChunk]) -> dict:
        """(side, layer) -> the unpatched output of that block on the base batch, for every layer a chunk resumes after;
        with `UNPATCHED_LOGITS`, the ranking-step logits of that pass."""
        prefix = {}
        for on_encoded, side in ((True, "decoder"), (False, "encoder")):
            blocks = {(side, c.resume_layer - 1) for c in chunks if c.encoded == on_encoded and c.resume_layer > 0}
            if blocks:
                prefix.update(block_outputs(self.gm, encoded if on_encoded else raw, blocks))
        return prefix

    @torch.no_grad()
    def forward(self, encoded: QueryBatch, raw: QueryBatch, values: Replacements, prefix: dict,
                shared: list | None, chunk: RowChunk) -> RowLogits:
        """One forward pass over one chunk of rows (from its resume layer on); `shared`: per decoder layer, the base
        queries' cross-attention keys and values (None: each pass projects its own)."""
        rows = (encoded if chunk.encoded else raw).select(chunk.item)
        writes = site_writes(self.gm, self.interventions, chunk.intervention, chunk.item, values, rows)
        side = "decoder" if chunk.encoded else "encoder"
        resume = None
        if chunk.resume_layer > 0:
            output = self.gm.adapter.resumed_block_output(prefix[(side, chunk.resume_layer - 1)], chunk.item)
            written = [s for s in writes if s.side == side and s.layer == chunk.resume_layer - 1 and self._is_block_output(s)]
            for site in written:  # a write to the block's own output: applied to the cached output
                write = writes.pop(site)
                output = write(output) if isinstance(output, torch.Tensor) else (write(output[0]), *output[1:])
            resume = Resume(side, chunk.resume_layer, output)
        if chunk.encoded and ENCODER_OUTPUT in writes:
            # The cached encoder output is the encoder.output activation: edit it, no hook needed (and its keys/values
            # differ from the shared ones).
            rows = QueryBatch(rows.input_ids, rows.attention_mask, writes.pop(ENCODER_OUTPUT)(rows.encoder_hidden), rows.decoder_input_ids)
        elif chunk.encoded and shared is not None:
            start = chunk.resume_layer
            index = chunk.item.to(shared[0][0].device)
            rows.cross_keys_values = tuple(None if layer < start else (k.index_select(0, index), v.index_select(0, index))
                                           for layer, (k, v) in enumerate(shared))
        return RowLogits(chunk.intervention, chunk.item, run(self.gm, rows, writes=writes, resume=resume).logits)
