"""Tiny GenIR models built in memory, for tests and planted-mechanism checks.

    gm = tiny_genir(decoder_layers=4)                                   # random tiny T5 with docid tokens
    gm = planted_cross_attention(tiny_genir(decoder_layers=8), layers=[3, 4])
    texts = toy_queries(gm, 16)

`planted_cross_attention` edits weights so that query information reaches the
decoder only through the cross-attention of the given layers (and, optionally,
only through given heads): every other cross-attention output projection is
zeroed. Analyses must then single out exactly those layers/heads.
"""
from __future__ import annotations

import random

import torch
from transformers import T5Config, T5ForConditionalGeneration

from .data.synthetic import SyntheticConfig, generate_corpus
from .docids import AtomicDocids
from .training.tokenizer import build_tokenizer
from .models.adapters import adapter_for
from .models.components import Site
from .models.genir_model import GenIRModel


def toy_tokenizer(n_docs: int = 20, seed: int = 0):
    ds = generate_corpus(SyntheticConfig(n_docs=n_docs, seed=seed, n_pairs=16))
    tok = build_tokenizer(list(ds.documents.values()) + [q.text for q in ds.queries], ds.documents)
    return tok, ds


def tiny_genir(encoder_layers: int = 2, decoder_layers: int = 4, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0, relu: bool = True) -> GenIRModel:
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tok), d_model=d_model, d_kv=d_model // num_heads, d_ff=2 * d_model, num_layers=encoder_layers,
        num_decoder_layers=decoder_layers, num_heads=num_heads, dropout_rate=0.0, feed_forward_proj="relu",
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, tie_word_embeddings=True,
    )
    model = T5ForConditionalGeneration(config).eval()
    return GenIRModel(model, tok, AtomicDocids.detect(tok), adapter_for(model), f"tiny-t5-{encoder_layers}x{decoder_layers}", f"tiny-t5-{encoder_layers}x{decoder_layers}")


def toy_queries(gm: GenIRModel, n: int, seed: int = 0) -> list[str]:
    """Queries of varied length (so batches need padding) from the toy corpus vocabulary."""
    _, ds = toy_tokenizer(len(gm.docids), 0)
    texts = [q.text for q in ds.queries]
    return random.Random(seed).sample(texts, min(n, len(texts)))


@torch.no_grad()
def planted_cross_attention(gm: GenIRModel, layers: list[int], heads: list[int] | None = None, boost: float = 4.0) -> GenIRModel:
    """Zero every decoder cross-attention except `layers` (and, if given, except `heads` in them).

    The kept projections are scaled by `boost` so the planted path dominates
    the residual stream, as the bridging stage does in trained models.
    """
    adapter = gm.adapter
    d = adapter.d_head
    for layer in range(adapter.n_layers("decoder")):
        o = adapter.output_projection(Site("decoder", layer, "cross_attn")).weight
        if layer not in layers:
            o.zero_()
            continue
        o.mul_(boost)
        if heads is not None:
            for h in range(adapter.n_heads):
                if h not in heads:
                    o[:, h * d : (h + 1) * d] = 0
    gm.name = f"{gm.name}-planted-{'-'.join(map(str, layers))}"
    return gm


@torch.no_grad()
def linearised(gm: GenIRModel, uniform_attention: bool = True) -> GenIRModel:
    """Make a model (edited in place; use the returned GenIRModel) affine in every activation: identity MLP activations, no norms, and (by default) fixed attention patterns.

    Norms (sublayer and final) become identities, the MLP nonlinearity becomes
    the identity, and with `uniform_attention` every query projection is
    zeroed, so attention weights no longer depend on activations (they are
    fixed by the position bias and the padding mask). First-order methods
    such as attribution patching must then be exact; with
    `uniform_attention=False` the attention softmax is the only nonlinearity left.
    """
    model = gm.hf_model
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in ("layer_norm", "final_layer_norm") or (name == "act" and hasattr(module, "wo")):
                setattr(module, name, torch.nn.Identity())
    if uniform_attention:
        for side in ("encoder", "decoder"):
            for site in gm.adapter.components(side, ("self_attn", "cross_attn")):
                gm.adapter.attention_weights(site)[0].zero_()
    # Modules were swapped, so the nnsight wrapper is rebuilt around the new tree.
    return GenIRModel(model, gm.tokenizer, gm.docids, adapter_for(model), f"{gm.name}-linear", gm.path)
