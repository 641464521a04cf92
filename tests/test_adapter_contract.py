"""The adapter contract, checked on every family's tiny model: a new family adds one line to FAMILIES.

Each check compares what the adapter claims with what the HuggingFace model
itself does, by a route that does not go through the adapter's own mapping
where possible (plain torch hooks, `output_hidden_states`, eager attention
weights, one-query-at-a-time forward passes). The last section breaks an
adapter on purpose and asserts that a check catches it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genir_mech.analyses.contributions import contributions
from genir_mech.analyses.encoder_swap import swapped_logits
from genir_mech.analyses.logit_lens import logit_lens
from genir_mech.analyses.reading import reading
from genir_mech.errors import GenIRError
from genir_mech.models.adapters import GPT2Adapter, LlamaAdapter, T5Adapter, module_at
from genir_mech.models.components import ATTENTION_KINDS, FACETS, Site
from genir_mech.models.execution import run
from genir_mech.models.genir_model import GenIRModel
from genir_mech.models.loading import check_logit_lens
from genir_mech.patching.engine import head_sweep
from genir_mech.patching.metrics import logit_diff
from genir_mech.patching.pairs import QueryPair, dataset_pairs, tokenize_pairs
from genir_mech.testing import planted_cross_attention, tiny_genir, tiny_gpt2_genir, tiny_llama_genir, toy_queries, toy_tokenizer

# family -> (tiny model factory, a few site -> module path pins written by hand, not derived from the adapter)
FAMILIES = {
    "t5": (lambda: tiny_genir(encoder_layers=2, decoder_layers=3), {
        "decoder.layers.1.cross_attn": "decoder.block.1.layer.1.EncDecAttention",
        "decoder.layers.2.mlp": "decoder.block.2.layer.2.DenseReluDense",
        "encoder.layers.1.mlp": "encoder.block.1.layer.1.DenseReluDense",
        "decoder.layers.0.self_attn.heads": "decoder.block.0.layer.0.SelfAttention.o",
    }),
    "llama": (lambda: tiny_llama_genir(layers=3), {
        "decoder.layers.1.self_attn": "model.layers.1.self_attn",
        "decoder.layers.2.mlp": "model.layers.2.mlp",
        "decoder.layers.0.self_attn.heads": "model.layers.0.self_attn.o_proj",
        "decoder.layers.1.resid_post": "model.layers.1",
    }),
    "qwen2": (lambda: tiny_llama_genir(layers=2, model_type="qwen2"), {"decoder.layers.1.self_attn.heads": "model.layers.1.self_attn.o_proj"}),
    "gpt2": (lambda: tiny_gpt2_genir(layers=3), {
        "decoder.layers.1.self_attn": "transformer.h.1.attn",
        "decoder.layers.2.mlp": "transformer.h.2.mlp",
        "decoder.layers.0.self_attn.heads": "transformer.h.0.attn.c_proj",
        "decoder.layers.1.mlp.resid_pre": "transformer.h.1.ln_2",
    }),
}



@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    factory, pins = FAMILIES[request.param]
    gm = factory()
    texts = toy_queries(gm, 6)
    assert (gm.batch(texts).attention_mask == 0).any(), "the toy queries must need padding"
    return factory, pins, gm, texts


def _all_sites(gm) -> list[Site]:
    sites = []
    for side in gm.adapter.sides:
        for layer in range(gm.n_layers(side)):
            sites += [Site(side, layer, "", "resid_pre"), Site(side, layer, "", "resid_post")]
            for kind in gm.adapter.kinds(side):
                sites += [Site(side, layer, kind, f) for f in FACETS if f != "heads" or kind in ATTENTION_KINDS]
    return sites


def _eager_attentions(out, gm, site: Site) -> torch.Tensor:
    """The model's own attention weights of `site` from an eager forward pass with output_attentions=True."""
    if not gm.adapter.has("encoder"):
        return out.attentions[site.layer]
    name = {("encoder", "self_attn"): "encoder_attentions", ("decoder", "self_attn"): "decoder_attentions", ("decoder", "cross_attn"): "cross_attentions"}
    return getattr(out, name[(site.side, site.kind)])[site.layer]


# -- the checks (each raises AssertionError) --------------------------------------------------------


def check_hooks(gm, texts, pins=None):
    """(a) run() reads what plain torch forward hooks / pre-hooks on the adapter's modules read; block inputs match output_hidden_states."""
    for name, path in (pins or {}).items():
        assert gm.adapter.hook(Site.parse(name)).path == path, f"{name} maps to {gm.adapter.hook(Site.parse(name)).path}, expected {path}"
    sites, captured, handles = _all_sites(gm), {}, []
    for site in sites:
        hook = gm.adapter.hook(site)
        module = module_at(gm.hf_model, hook.path)
        if hook.io == "input":
            def pre(mod, args, kwargs, site=site):
                captured[site] = args[0] if args else kwargs["hidden_states"]
            handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            def post(mod, args, out, site=site, index=hook.index):
                captured[site] = out if index is None else out[index]
            handles.append(module.register_forward_hook(post))
    batch = gm.batch(texts)
    try:
        with torch.no_grad():
            out = gm.hf_model(**gm.model_inputs(batch), output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    result = run(gm, batch, reads=sites)
    for site in sites:
        torch.testing.assert_close(result.values[site], captured[site], msg=f"{site.name} differs from the plain hook")
    torch.testing.assert_close(result.logits, out.logits[:, -1])
    # Independent of the adapter's paths: HF's own record of each block's input.
    hidden = out.decoder_hidden_states if gm.adapter.has("encoder") else out.hidden_states
    for layer in range(gm.n_layers("decoder")):
        torch.testing.assert_close(result.values[Site("decoder", layer, "", "resid_pre")], hidden[layer], msg=f"decoder block {layer} input")


def check_heads_sum(gm, texts):
    """(b) per-head contributions sum to the attention sublayer output, and each head matters."""
    batch = gm.batch(texts)
    for side in gm.adapter.sides:
        for site in gm.components(side, ATTENTION_KINDS):
            heads = site.with_facet("heads")
            values = run(gm, batch, reads=[heads, site]).values
            per_head = gm.adapter.head_contributions(heads, values[heads])
            assert per_head.shape[-2] == gm.adapter.n_heads
            torch.testing.assert_close(per_head.sum(-2), values[site], atol=1e-5, rtol=1e-5, msg=f"{site.name}: heads do not sum to the output")
            assert (per_head[:, -1].norm(dim=-1) > 0).all(), f"{site.name}: a head contributes nothing; the sum test would be vacuous"


def check_lens(gm, texts):
    """(c) the logit lens of the final residual reproduces the logits."""
    assert check_logit_lens(gm) < 1e-4
    last = Site("decoder", gm.n_layers("decoder") - 1, "", "resid_post")
    result = run(gm, gm.batch(texts), reads=[last])
    torch.testing.assert_close(gm.adapter.project(result.values[last][:, -1]), result.logits, atol=1e-4, rtol=1e-4)


def check_attention(gm, texts):
    """(d) the adapter's attention recompute equals the model's eager attention weights, all rows and the last row alone."""
    gm.hf_model.set_attn_implementation("eager")
    try:
        batch = gm.encode(gm.batch(texts))
        with torch.no_grad():
            out = gm.hf_model(**gm.model_inputs(gm.batch(texts)), output_attentions=True)
        for side in gm.adapter.sides:
            sites = gm.components(side, ATTENTION_KINDS)
            pre = [s.with_facet("resid_pre") for s in sites]
            values = run(gm, gm.batch(texts) if side == "encoder" else batch, reads=pre).values
            for site, resid_site in zip(sites, pre):
                resid = values[resid_site]
                attn = gm.adapter.attention(site, batch)
                keys, _ = attn.keys_values(resid if attn.keys_from_residual else batch.encoder_hidden)
                with torch.no_grad():
                    full = attn.weights(attn.query(resid), keys)
                    last = attn.weights(attn.query(resid, torch.tensor([-1])), keys, torch.tensor([-1]))
                expected = _eager_attentions(out, gm, site)
                assert last.shape[-2] == 1, "the last-row recompute must not build all rows"
                torch.testing.assert_close(last[:, :, 0], expected[:, :, -1], atol=1e-5, rtol=1e-4, msg=f"{site.name}: last row")
                # Rows of padding queries are undefined (fully masked) in some families: compare real query rows.
                real = (batch.attention_mask.bool() if resid.shape[1] == batch.attention_mask.shape[1] else torch.ones(resid.shape[:2], dtype=torch.bool))
                rows = real[:, None, :, None].expand_as(full)
                torch.testing.assert_close(full[rows], expected[rows], atol=1e-5, rtol=1e-4, msg=f"{site.name}: all rows")
    finally:
        gm.hf_model.set_attn_implementation("sdpa")


def check_residual(gm, texts):
    """(e) each sublayer adds its output to the residual, and each layer's resid_post = resid_pre + the sum of its sublayer outputs."""
    sites = _all_sites(gm)
    values = run(gm, gm.batch(texts), reads=sites).values
    for side in gm.adapter.sides:
        for layer in range(gm.n_layers(side)):
            kinds = gm.adapter.kinds(side)
            total = values[Site(side, layer, "", "resid_pre")] + sum(values[Site(side, layer, k)] for k in kinds)
            torch.testing.assert_close(values[Site(side, layer, "", "resid_post")], total, atol=1e-5, rtol=1e-5, msg=f"{side} layer {layer}")
            for k in kinds:
                pre, out, post = (values[Site(side, layer, k, f)] for f in ("resid_pre", "out", "resid_post"))
                torch.testing.assert_close(post, pre + out, atol=1e-5, rtol=1e-5, msg=f"{side} layer {layer} {k}")


def check_batching(gm, texts):
    """(f) batched logits with padding equal one query at a time (masking, padding side, position ids)."""
    batch = gm.batch(texts)
    assert (batch.attention_mask == 0).any()
    single = torch.cat([gm.logits(gm.batch([t])) for t in texts])
    torch.testing.assert_close(gm.logits(batch), single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run(gm, batch).logits, single, atol=1e-5, rtol=1e-5)


CHECKS = [check_hooks, check_heads_sum, check_lens, check_attention, check_residual, check_batching]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_contract(family, check):
    _, pins, gm, texts = family
    check(gm, texts, pins) if check is check_hooks else check(gm, texts)


def test_sides_kinds_and_counts_come_from_the_adapter_and_config(family):
    factory, _, gm, _ = family
    assert gm.adapter.sides[-1] == "decoder"
    for side in gm.adapter.sides:
        assert len(gm.components(side)) == gm.n_layers(side) * len(gm.adapter.kinds(side)) > 0
    assert gm.adapter.query_reading_kind in gm.adapter.kinds("decoder")
    assert gm.adapter.auto_class.from_config(gm.hf_model.config).__class__ is type(gm.hf_model)
    n = gm.adapter.n_layers("decoder")
    assert n == (gm.hf_model.config.num_decoder_layers if gm.adapter.has("encoder") else gm.hf_model.config.num_hidden_layers)
    with pytest.raises(GenIRError, match=f"has {n} layers"):
        gm.adapter.hook(Site("decoder", n, "mlp"))


# -- a broken adapter fails a check -----------------------------------------------------------------


def _with_adapter(gm, adapter_cls) -> GenIRModel:
    return GenIRModel(gm.hf_model, gm.tokenizer, gm.docids, adapter_cls(gm.hf_model), gm.name, gm.path)


class RightPadded(LlamaAdapter):
    """Pads a decoder-only model on the right: shorter queries then rank at a padding position."""

    padding_side = "right"


class NoRope(LlamaAdapter):
    """Recomputes attention without rotating queries and keys."""

    def attention(self, site, batch):
        attn = super().attention(site, batch)
        attn._rotate = lambda x, positions: x
        return attn


class WrongGroups(LlamaAdapter):
    """Pairs query heads with key/value heads round-robin instead of in consecutive groups."""

    def attention(self, site, batch):
        attn = super().attention(site, batch)
        attn.w_k = attn.w_k.unflatten(0, (attn.h_kv, attn.d)).roll(1, 0).flatten(0, 1)
        return attn


class GPT2WithoutPositionIds(GPT2Adapter):
    """Leaves GPT-2's position ids to HF, which counts them from the padded start: learned positions then shift with left padding."""

    def model_inputs(self, batch):
        inputs = super().model_inputs(batch)
        inputs.pop("position_ids")
        return inputs


class MlpOutIsResidual(T5Adapter):
    """Reads a decoder MLP's output at its wrapper module (T5LayerFF), which returns the residual, not the MLP output."""

    def hook(self, site):
        if site.kind == "mlp" and site.facet == "out" and site.side == "decoder":
            return super().hook(site.with_facet("resid_post"))
        return super().hook(site)


class Unscaled(T5Adapter):
    @property
    def output_scale(self):
        return 1.0


@pytest.mark.parametrize("family_name, broken, check", [
    ("llama", RightPadded, check_batching),
    ("llama", NoRope, check_attention),
    ("llama", WrongGroups, check_attention),
    ("gpt2", GPT2WithoutPositionIds, check_batching),
    ("t5", MlpOutIsResidual, check_residual),
    ("t5", Unscaled, check_lens),
])
def test_a_broken_adapter_fails_the_contract(family_name, broken, check):
    factory, _ = FAMILIES[family_name]
    gm = factory()
    texts = toy_queries(gm, 6)
    check(gm, texts)  # the real adapter passes ...
    with pytest.raises((AssertionError, GenIRError)):
        check(_with_adapter(gm, broken), texts)  # ... the broken one does not


# -- the decoder-only seam: analyses and patching on a Llama-style model ------------------------------


@pytest.fixture(scope="module")
def llama():
    return tiny_llama_genir(layers=3)


@pytest.fixture(scope="module")
def pair_batch(llama):
    return tokenize_pairs(llama, dataset_pairs(toy_tokenizer(len(llama.docids), 0)[1])[:4])


def test_decoder_only_pairs_end_in_the_ranking_column(llama, pair_batch):
    assert (pair_batch.clean.attention_mask[:, -1] == 1).all() and (pair_batch.corrupted.attention_mask[:, -1] == 1).all()
    assert pair_batch.decoder_length == pair_batch.width
    uneven = [QueryPair("u", "who founded fikan", "where is fikan today please", "1", "2")]
    left = tokenize_pairs(llama, uneven, align="left-pad")
    eos = llama.tokenizer.eos_token_id
    assert left.clean.input_ids[0, -1] == eos == left.corrupted.input_ids[0, -1] and left.clean.attention_mask[0, 0] == 0
    with pytest.raises(GenIRError, match="align='right-pad' cannot be used"):
        tokenize_pairs(llama, uneven, align="right-pad")


def test_head_patching_on_self_attention_matches_a_hand_made_patch(llama, pair_batch):
    table = head_sweep(llama, pair_batch, metrics={"logit_diff": logit_diff})
    n_heads, n_layers = llama.adapter.n_heads, llama.n_layers("decoder")
    assert len(table) == n_layers * n_heads * len(pair_batch) and set(table.component) == {"self_attn"}
    layer, head, d = n_layers - 1, 1, llama.adapter.d_head
    o_proj = llama.hf_model.model.layers[layer].self_attn.o_proj
    clean_heads = {}
    handle = o_proj.register_forward_pre_hook(lambda mod, args: clean_heads.setdefault("x", args[0].clone()))
    try:
        llama.logits(pair_batch.clean)
    finally:
        handle.remove()

    def patch(mod, args):
        x = args[0].clone()
        x[..., head * d : (head + 1) * d] = clean_heads["x"][..., head * d : (head + 1) * d]
        return (x,)

    handle = o_proj.register_forward_pre_hook(patch)
    try:
        expected = logit_diff(llama.logits(pair_batch.corrupted), pair_batch.targets)
    finally:
        handle.remove()
    got = table[(table["layer"] == layer) & (table["head"] == head)]
    order = [p.pair_id for p in pair_batch.pairs]
    got = got.set_index("pair_id").loc[order, "value"].to_numpy()
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    assert np.abs(table.value - table.corrupted).max() > 1e-3  # heads matter: the comparison is not vacuous


def test_logit_lens_and_contributions_run_on_a_decoder_only_model(llama):
    texts = toy_queries(llama, 5)
    top = llama.docids.scores(llama.logits(llama.batch(texts))).argmax(1)
    docs, ids = [llama.docids.doc_ids[i] for i in top], [str(i) for i in range(len(texts))]
    lens = logit_lens(llama, texts, ids, docs, batch_size=2)
    heads = lens.ranks[lens.ranks.facet == "head"]
    assert set(heads.component) == {"self_attn"} and heads["head"].nunique() == llama.adapter.n_heads
    final = lens.ranks[(lens.ranks.facet == "resid_post") & (lens.ranks.component == "mlp") & (lens.ranks.layer == llama.n_layers() - 1)]
    assert (final[final.metric == "relevant_doc_rank"].value == 1).all()  # the lens of the last residual is the model's own ranking
    assert len(lens.head_tokens) > 0
    df = contributions(llama, texts, ids)
    assert set(df.component) == {"self_attn", "mlp"} and df.value.notna().all()
    with pytest.raises(GenIRError, match="needs encoder"):
        contributions(llama, texts, ids, sides=("encoder", "decoder"))


def test_analyses_that_need_an_encoder_refuse_a_decoder_only_model(llama):
    texts = toy_queries(llama, 2)
    with pytest.raises(GenIRError, match="component reading needs encoder and cross_attn"):
        reading(llama, texts)
    with pytest.raises(GenIRError, match="the encoder swap needs encoder and cross_attn"):
        swapped_logits(llama, llama, texts)
    with pytest.raises(GenIRError, match="needs cross_attn"):
        planted_cross_attention(llama, [0])
    with pytest.raises(GenIRError, match="has no encoder"):
        run(llama, llama.batch(texts), reads=[Site.parse("encoder.layers.0.mlp")])
    with pytest.raises(GenIRError, match="can be read but not written"):
        run(llama, llama.batch(texts), writes={Site.parse("decoder.layers.0.mlp.resid_pre"): lambda x: x})
