"""Replacement values for interventions: source-run caches, means over reference queries, another model's activations.

    values = Replacements(means=site_means(gm, reference_texts, sites))             # for value "mean"
    source = source_run(gm, clean_batch, sites); Replacements(source=source.values)  # for value "source"
    values = Replacements(other=other_model_values(gm, other, batch, sites))         # for value "other-model"

Per-query caches (`source`, `other`) are indexed by the rows of the base batch
the executor fans out; means broadcast over every row: (T, d) per decoder
position for decoder sites, (d,) over non-padding tokens for encoder sites.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import GenIRError
from ..models.components import Site
from ..models.execution import QueryBatch, RunResult, run
from .spec import ENCODER_OUTPUT


@dataclass
class Replacements:
    """What the executor writes for each value: `source` and `other` hold (items, T, D) per site, `means` (T, D) or (D,) per site."""

    source: dict[Site, torch.Tensor] = field(default_factory=dict)
    means: dict[Site, torch.Tensor] = field(default_factory=dict)
    other: dict[Site, torch.Tensor] = field(default_factory=dict)

    def lookup(self, value: str) -> dict[Site, torch.Tensor] | None:
        """The per-site replacement tensors for one value kind (source, mean, other-model); None for zero."""
        return {"source": self.source, "mean": self.means, "other-model": self.other}.get(value)


def without_encoder_output(batch: QueryBatch) -> QueryBatch:
    """The same queries with the cached encoder output dropped, for runs that must go through the encoder."""
    return QueryBatch(batch.input_ids, batch.attention_mask, None, batch.decoder_input_ids)


@torch.no_grad()
def site_means(gm, texts: list[str], sites, batch_size: int = 64, decoder_inputs: torch.Tensor | None = None) -> dict[Site, torch.Tensor]:
    """Mean output of each site over `texts`: per decoder position (T, d) for an encoder-decoder's decoder sites,
    over non-padding tokens (d,) for sites that read the query's tokens (the encoder, or a decoder-only model,
    whose prompts differ in width). `decoder_inputs` (one row per text): the teacher-forced prefixes of a decoding
    step (retrieval.steps), so decoder means are taken at that step's positions."""
    sites = list(dict.fromkeys(sites))
    if not texts:
        raise GenIRError("mean values need reference queries; the list of texts is empty")
    if batch_size < 1:
        raise GenIRError(f"batch_size must be positive, got {batch_size}")
    encoder = any(s.side == "encoder" for s in sites)
    over_tokens = {s for s in sites if s.side == "encoder" or "encoder" not in gm.adapter.sides}
    sums: dict[Site, torch.Tensor] = {}
    counts: dict[Site, torch.Tensor] = {}
    for start in range(0, len(texts), batch_size):
        batch = gm.batch(texts[start : start + batch_size])
        if decoder_inputs is not None:
            batch.decoder_input_ids = decoder_inputs[start : start + batch_size].to(gm.device)
        values = run(gm, batch if encoder else gm.encode(batch), reads=sites).values
        for site in sites:
            v = values[site]
            if site in over_tokens:
                w = batch.attention_mask.to(v.dtype)[..., None]
                total, n = (v * w).sum((0, 1)), w.sum((0, 1))
            else:
                total, n = v.sum(0), torch.tensor(float(v.shape[0]))
            sums[site] = sums.get(site, 0) + total
            counts[site] = counts.get(site, 0) + n
    return {s: sums[s] / counts[s] for s in sites}


def source_run(gm, source: QueryBatch, sites) -> RunResult:
    """The source run's activations at `sites` (plus `encoder.output`) and its logits, encoder run once.

    Decoder sites and the encoder output are read from one run on the encoded
    queries; encoder-layer sites need a run through the encoder.
    """
    sites = sorted(set(sites), key=gm.adapter.order_key)
    decoder = [s for s in sites if s.side == "decoder"]
    encoder = [s for s in sites if s.side == "encoder" and s != ENCODER_OUTPUT]
    values, logits = {}, None
    if decoder or ENCODER_OUTPUT in sites or not encoder:
        encoded = source if source.encoder_hidden is not None else gm.encode(source)
        result = run(gm, encoded, reads=decoder)
        values.update(result.values)
        values[ENCODER_OUTPUT] = encoded.encoder_hidden
        logits = result.logits
    if encoder:
        result = run(gm, without_encoder_output(source), reads=encoder)
        values.update(result.values)
        logits = result.logits
    return RunResult(logits, values)


def check_compatible(gm, other, texts: list[str], sites) -> None:
    """Refuse other-model values from a model whose residual stream, layers or query tokens differ."""
    if other.adapter.d_model != gm.adapter.d_model:
        raise GenIRError(
            f"cross-model ablation: {other.path} has d_model {other.adapter.d_model} but {gm.path} has {gm.adapter.d_model}; "
            "component outputs can only be swapped between models of equal width"
        )
    for site in dict.fromkeys(sites):
        if site.layer >= other.n_layers(site.side):
            raise GenIRError(f"cross-model ablation: {other.path} has {other.n_layers(site.side)} {site.side} layers, so it has no {site.name}")
    mine, theirs = gm.batch(texts), other.batch(texts)
    if mine.input_ids.shape != theirs.input_ids.shape or not torch.equal(mine.input_ids.cpu(), theirs.input_ids.cpu()):
        rows = range(min(len(mine.input_ids), len(theirs.input_ids)))
        first = next((i for i in rows if not torch.equal(mine.input_ids[i].cpu(), theirs.input_ids[i].cpu())), 0)
        raise GenIRError(
            f"cross-model ablation: the tokenizers of {gm.path} and {other.path} split query {texts[first]!r} differently; "
            "the other checkpoint must share the tokenizer (e.g. the base model the GenIR model was fine-tuned from)"
        )


def other_model_values(other, batch: QueryBatch, sites) -> dict[Site, torch.Tensor]:
    """The same sites of `other` on the same queries (its own encoder runs; check_compatible first)."""
    sites = list(dict.fromkeys(sites))
    if not sites:
        return {}
    return run(other, without_encoder_output(batch), reads=sites).values
