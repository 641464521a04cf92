"""Run a GenIR model once under nnsight, reading, rewriting and differentiating standard sites.

    batch = gm.batch(["who founded zorblax", ...])          # tokenized, padded, masked
    batch = gm.encode(batch)                                # encoder runs once; reused by runs that touch only the decoder
    res = run(gm, batch, reads=[Site.parse("decoder.layers.3.cross_attn")],
              writes={Site.parse("decoder.layers.5.mlp"): lambda x: x * 0})
    res.values[site], res.logits                            # (B, T, ...) activations, (B, vocab) ranking-step logits

This is the single place where genir_mech builds an nnsight intervention
graph; activation patching, ablations, the logit lens and attribution all
call it. Sites are visited in forward order, as nnsight requires.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import nnsight
import torch

from ..errors import GenIRError
from .adapters import module_at
from .components import Site

Write = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class QueryBatch:
    """Tokenized queries, padded and masked, plus what a run may reuse: the cached encoder output and decoder inputs.

    Example:
        >>> batch = gm.batch(["who founded zorblax", "zorblax river"])   # padded on the side the adapter asks for
        >>> batch.input_ids.shape, batch.attention_mask.shape              # (2, T), (2, T); mask 0 = padding
        >>> batch = gm.encode(batch)          # encoder-decoder: encoder_hidden (2, T, d) cached; decoder-only: unchanged
        >>> batch.select([0, 0, 1])           # rows, repeats allowed: one query fanned out to many patches

    How a batch becomes forward-pass arguments is the adapter's decision
    (`gm.adapter.model_inputs(batch)`): start token and encoder outputs for
    T5, left padding and position ids for decoder-only models.
    `decoder_input_ids` are tokens already decoded after the query (None: the
    ranking step of atomic docids). `cross_keys_values` are each decoder layer's
    cross-attention keys and values of `encoder_hidden`, computed once per query
    (`adapter.cross_keys_values`) and handed to the forward pass as a filled cache;
    None for a layer the run skips (or for all: the run projects them itself).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    encoder_hidden: torch.Tensor | None = None
    decoder_input_ids: torch.Tensor | None = None
    cross_keys_values: tuple | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: torch.Tensor | list[int]) -> "QueryBatch":
        """Rows of this batch (repeats allowed): how one query is fanned out to many patches."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        pick = lambda t: None if t is None else t.index_select(0, rows.to(t.device))  # noqa: E731
        cross = None if self.cross_keys_values is None else tuple(None if kv is None else (pick(kv[0]), pick(kv[1])) for kv in self.cross_keys_values)
        return QueryBatch(pick(self.input_ids), pick(self.attention_mask), pick(self.encoder_hidden), pick(self.decoder_input_ids), cross)


UNPATCHED_LOGITS = ("output", "logits")  # the key of `block_outputs` that holds the unpatched ranking-step logits


@dataclass(frozen=True)
class Resume:
    """Start a side's stack at layer `layer`: blocks 0..layer-1 are skipped and hand on `output`, what block layer-1
    returned for these rows in an unpatched run (`block_outputs` + `adapter.resumed_block_output`).

    Everything a block needs that is computed outside the blocks (embeddings, masks, rotary embeddings) is
    still computed by the model; what the first block computes for later ones (T5's position bias) travels in `output`.
    """

    side: str
    layer: int
    output: object


@dataclass
class RunResult:
    """What one `run` returns: ranking-step logits, the activations read and the gradients asked for.

    Example:
        >>> res = run(gm, batch, reads=[site])
        >>> res.logits.shape        # (B, vocab) at the ranking position
        >>> res.values[site]        # (B, T, ...) as the site's hook sees it
        >>> res.grads               # {site: d metric / d activation} for `grads=` sites
    """

    logits: torch.Tensor  # (B, vocab) at decoder position `position`
    values: dict[Site, torch.Tensor] = field(default_factory=dict)
    grads: dict[Site, torch.Tensor] = field(default_factory=dict)


def _read(envoy, hook):
    value = envoy.input if hook.io == "input" else envoy.output
    return value if hook.index is None else value[hook.index]


def _assign(envoy, hook, new):
    if hook.io == "input":
        envoy.input = new
    elif hook.index is None:
        envoy.output = new
    else:
        old = envoy.output
        envoy.output = (*old[: hook.index], new, *old[hook.index + 1 :])


def run(
    gm,
    batch: QueryBatch,
    reads: Iterable[Site] = (),
    writes: dict[Site, Write] | None = None,
    grads: Iterable[Site] = (),
    metric: Callable[[torch.Tensor], torch.Tensor] | None = None,
    position: int = -1,
    resume: Resume | None = None,
) -> RunResult:
    """One forward pass (and, with `grads`, one backward pass of `metric(logits)`), reading and rewriting standard sites.

    Example:
        >>> site = Site.parse("decoder.layers.1.mlp")
        >>> res = run(gm, gm.batch(["who founded zorblax"]), reads=[site], writes={site: lambda x: 0 * x})
        >>> res.values[site]        # the value after the write (zeros); res.logits: (1, vocab) of the ablated model
        >>> res = run(gm, batch, grads=[site], metric=lambda logits: logits[:, 7].sum())   # res.grads[site]

    `position` picks the logits row (the last position, the ranking step, by
    default). Inputs are built by the adapter, so the same call runs an
    encoder-decoder or a decoder-only model. `resume` skips the first layers of
    one side (nnsight's module skip), handing on their cached output: every
    read and write at or after the resume layer is the same intervention graph.
    """
    writes = dict(writes or {})
    # Gradients must be requested in reverse forward order, whatever order the caller listed them in.
    reads, grads = list(dict.fromkeys(reads)), sorted(dict.fromkeys(grads), key=gm.adapter.order_key)
    sites = sorted(set(reads) | set(writes) | set(grads), key=gm.adapter.order_key)
    if batch.encoder_hidden is not None:
        encoder_sites = [s.name for s in sites if s.side == "encoder"]
        if encoder_sites:
            raise GenIRError(f"sites {', '.join(encoder_sites)} are in the encoder, but this batch reuses a cached encoder output; pass an un-encoded batch")
    if grads and metric is None:
        raise GenIRError("gradients were requested without a metric to differentiate")
    hooks = {s: gm.adapter.hook(s) for s in sites}
    fixed = [s.name for s in writes if not hooks[s].writable]
    if fixed:
        raise GenIRError(f"sites {', '.join(fixed)} can be read but not written in a {gm.adapter.family} model (see its adapter module); write a sublayer output or a block resid_pre/resid_post instead")
    if resume is not None:
        early = [s.name for s in sites if s.side == resume.side and 0 <= s.layer < resume.layer]
        if early:
            raise GenIRError(f"sites {', '.join(early)} come before {resume.side} layer {resume.layer}, where this run resumes")
    kwargs = gm.adapter.model_inputs(batch)
    context = torch.enable_grad() if grads else torch.no_grad()
    with context:
        with gm.nn.trace(**kwargs):
            store = nnsight.save({"values": {}, "grads": {}})
            skipped = resume is not None
            for site in sites + [None]:
                if skipped and (site is None or site.side == resume.side):
                    # Skips are module accesses too: issued in forward order, before the side's first site.
                    for layer in range(resume.layer):
                        module_at(gm.nn, gm.adapter.block_path(resume.side, layer)).skip(resume.output)
                    skipped = False
                if site is None:
                    break
                envoy = module_at(gm.nn, hooks[site].path)
                value = _read(envoy, hooks[site])
                if site in writes:
                    value = writes[site](value)
                    _assign(envoy, hooks[site], value)
                if site in reads or site in grads:
                    store["values"][site] = value
            logits = gm.nn.output.logits[:, position]
            store["logits"] = logits
            if grads:
                score = metric(logits)
                with score.backward():
                    for site in reversed(grads):
                        store["grads"][site] = store["values"][site].grad
    values = {s: v.detach() for s, v in store["values"].items() if s in reads}
    return RunResult(store["logits"].detach(), values, {s: g.detach() for s, g in store["grads"].items()})


@torch.no_grad()
def block_outputs(gm, batch: QueryBatch, blocks: Iterable[tuple[str, int]]) -> dict[tuple[str, int], object]:
    """What each (side, layer) block returns in an unpatched run of `batch`: the state a `Resume` at layer+1 starts from.

    Decoder blocks may be read from an encoded batch; encoder blocks need an un-encoded one. The pass runs the whole
    model anyway, so its ranking-step logits come along under `UNPATCHED_LOGITS`: the unpatched baseline a sweep needs.
    """
    blocks = sorted(set(blocks), key=lambda b: (gm.adapter.sides.index(b[0]), b[1]))
    if batch.encoder_hidden is not None and any(side == "encoder" for side, _ in blocks):
        raise GenIRError("encoder block outputs need an un-encoded batch (this one reuses a cached encoder output)")
    with gm.nn.trace(**gm.adapter.model_inputs(batch)):
        store = nnsight.save({})
        for side, layer in blocks:
            store[(side, layer)] = module_at(gm.nn, gm.adapter.block_path(side, layer)).output
        store[UNPATCHED_LOGITS] = gm.nn.output.logits[:, -1]
    return dict(store)
