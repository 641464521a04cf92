"""Tiny GenIR models built in memory, one factory per architecture family, for tests and planted-mechanism checks.

    gm = tiny_genir(decoder_layers=4)                                   # random tiny T5 with docid tokens
    gm = tiny_sequence_genir("naive", n_docs=30)                        # tiny T5 with multi-token (digit) docids
    gm = tiny_llama_genir(layers=3)                                     # random tiny decoder-only Llama (GQA)
    gm = tiny_bart_genir(); gm = tiny_bert2bert_genir(); gm = tiny_mt5_genir(); gm = tiny_t5gemma_genir()
    gm = tiny_gpt2_genir(layers=3)                                      # random tiny GPT-2 (Conv1D, learned positions)
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
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    GPT2Config,
    GPT2LMHeadModel,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    LlamaConfig,
    LlamaForCausalLM,
    MT5Config,
    MT5ForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
    T5GemmaConfig,
    T5GemmaForConditionalGeneration,
    T5GemmaModuleConfig,
)

from .data.synthetic import SyntheticConfig, generate_corpus
from .docids import AtomicDocids, SequenceDocids
from .errors import GenIRError
from .models.adapters import adapter_for, module_at
from .models.components import ATTENTION_KINDS, Site
from .models.genir_model import GenIRModel
from .training.tokenizer import build_tokenizer


def toy_tokenizer(n_docs: int = 20, seed: int = 0):
    """A word-level tokenizer over a synthetic corpus, with one docid token per document, and that corpus.

    Example:
        >>> tok, ds = toy_tokenizer(20)
        >>> tok.convert_ids_to_tokens(tok("who founded zorblax").input_ids)[-1]    # '</s>'
    """
    ds = generate_corpus(SyntheticConfig(n_docs=n_docs, seed=seed, n_pairs=16))
    tok = build_tokenizer(list(ds.documents.values()) + [q.text for q in ds.queries], ds.documents)
    return tok, ds


def tiny_genir(encoder_layers: int = 2, decoder_layers: int = 4, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0, relu: bool = True) -> GenIRModel:
    """A random tiny T5 GenIR model (encoder-decoder family), seeded, on the toy tokenizer.

    Example:
        >>> gm = tiny_genir(decoder_layers=3)
        >>> gm.adapter.family, gm.n_layers("decoder"), len(gm.docids)    # ('t5', 3, 20)
    """
    return _tiny_t5(T5Config, T5ForConditionalGeneration, encoder_layers, decoder_layers, d_model, num_heads, n_docs, seed, feed_forward_proj="relu" if relu else "gated-gelu", tie_word_embeddings=True)


def _tiny_t5(config_cls, model_cls, encoder_layers, decoder_layers, d_model, num_heads, n_docs, seed, **variant) -> GenIRModel:
    """A tiny model of the T5 family (T5, mT5) on the toy tokenizer; `variant` holds what differs (MLP kind, tied output)."""
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    config = config_cls(
        vocab_size=len(tok), d_model=d_model, d_kv=d_model // num_heads, d_ff=2 * d_model, num_layers=encoder_layers,
        num_decoder_layers=decoder_layers, num_heads=num_heads, dropout_rate=0.0,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id, **variant,
    )
    return _tiny(model_cls(config), tok, f"tiny-{config.model_type}-{encoder_layers}x{decoder_layers}")


def tiny_sequence_genir(scheme: str = "naive", encoder_layers: int = 2, decoder_layers: int = 3, d_model: int = 32, num_heads: int = 4,
                        n_docs: int = 20, seed: int = 0) -> GenIRModel:
    """A random tiny T5 with multi-token docids (`naive` digits or `title` words) on the toy tokenizer.

    Example:
        >>> gm = tiny_sequence_genir("naive", n_docs=30)
        >>> gm.docids.sequence("17"), gm.docids.max_length      # (id of "1", id of "7"), 2
    """
    from .data.docid_assignment import naive_docids, title_docids
    from .training.tokenizer import add_docid_tokens

    gm = tiny_genir(encoder_layers, decoder_layers, d_model, num_heads, n_docs, seed)
    _, ds = toy_tokenizer(n_docs, seed)
    builders = {"naive": lambda: naive_docids(ds.documents), "title": lambda: title_docids(ds.documents)}
    if scheme not in builders:
        raise GenIRError(f"tiny_sequence_genir builds {', '.join(builders)} docids, not {scheme!r}")
    mapping = builders[scheme]()
    torch.manual_seed(seed)
    add_docid_tokens(gm.hf_model, gm.tokenizer, mapping)
    return GenIRModel(gm.hf_model.eval(), gm.tokenizer, SequenceDocids.from_mapping(mapping, gm.tokenizer), gm.adapter, gm.name, gm.path)


def tiny_llama_genir(layers: int = 3, d_model: int = 32, num_heads: int = 4, num_kv_heads: int = 2, n_docs: int = 20, seed: int = 0, model_type: str = "llama") -> GenIRModel:
    """A random tiny decoder-only Llama GenIR model (RMSNorm, RoPE, grouped-query attention, gated SiLU MLP) on the toy tokenizer.

    Example:
        >>> gm = tiny_llama_genir()
        >>> gm.adapter.sides, gm.adapter.n_heads, gm.adapter.n_kv_heads   # (('decoder',), 4, 2)
        >>> gm.logits(gm.batch(["who founded zorblax"])).shape           # (1, vocab): the last query position ranks

    `num_kv_heads` < `num_heads` exercises GQA; `model_type="qwen2"` builds the
    Qwen2 variant (biases on q/k/v) of the same family. Weights are re-drawn larger
    than HF's initialisation (std 0.02) so that heads and positions matter in
    tests (softmax far from uniform, RoPE visible).
    """
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if model_type not in classes:
        raise GenIRError(f"model_type={model_type!r}: tiny Llama-family models are {', '.join(classes)}")
    config_cls, model_cls = classes[model_type]
    config = config_cls(
        vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, max_position_embeddings=128, rms_norm_eps=1e-6,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
        attention_dropout=0.0,
    )
    model = model_cls(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)  # see the docstring: sharper attention than the default init
            elif param.ndim == 1 and model_type == "qwen2" and param.abs().max() == 0:
                param.normal_(0.0, 0.3)  # q/k/v biases start at zero: make them matter
    name = f"tiny-{model_type}-{layers}"
    return GenIRModel(model, tok, AtomicDocids.detect(tok), adapter_for(model), name, name)


def _tiny(model, tok, name: str) -> GenIRModel:
    """A GenIRModel around a freshly built tiny HF model (eval mode, adapter from its config)."""
    model = model.eval()
    return GenIRModel(model, tok, AtomicDocids.detect(tok), adapter_for(model), name, name)


def tiny_mt5_genir(encoder_layers: int = 2, decoder_layers: int = 3, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0) -> GenIRModel:
    """A random tiny mT5 GenIR model (T5 family: gated-GELU MLP, untied output embedding) on the toy tokenizer.

    Example:
        >>> gm = tiny_mt5_genir()
        >>> gm.adapter.family, gm.hf_model.config.model_type      # ('t5', 'mt5')
    """
    return _tiny_t5(MT5Config, MT5ForConditionalGeneration, encoder_layers, decoder_layers, d_model, num_heads, n_docs, seed, feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def tiny_bart_genir(encoder_layers: int = 2, decoder_layers: int = 3, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0) -> GenIRModel:
    """A random tiny BART GenIR model (post-LayerNorm, biased projections, learned positions) on the toy tokenizer.

    Example:
        >>> gm = tiny_bart_genir()
        >>> gm.adapter.family, gm.adapter.post_norm(gm.components()[0]) is not None   # ('bart', True)

    Weights are drawn with std 0.2 (BART's default is 0.02) so that attention
    is far from uniform and biases matter in tests.
    """
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=len(tok), d_model=d_model, encoder_layers=encoder_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=num_heads, decoder_attention_heads=num_heads, encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
        max_position_embeddings=128, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.2,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    with torch.no_grad():
        model.final_logits_bias.normal_(0.0, 0.2)  # zero at init; make the lens prove it is included
        for name, param in model.named_parameters():
            if param.ndim == 1 and name.endswith(".bias"):
                param.normal_(0.0, 0.2)
    return _tiny(model, tok, f"tiny-bart-{encoder_layers}x{decoder_layers}")


def tiny_bert2bert_genir(encoder_layers: int = 2, decoder_layers: int = 3, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0) -> GenIRModel:
    """A random tiny BERT2BERT GenIR model (`EncoderDecoderModel`, BERT encoder and decoder with cross-attention) on the toy tokenizer.

    Example:
        >>> gm = tiny_bert2bert_genir()
        >>> gm.adapter.family, gm.adapter.kinds("decoder")     # ('bert2bert', ('self_attn', 'cross_attn', 'mlp'))
    """
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)

    def config(layers, decoder):
        return BertConfig(
            vocab_size=len(tok), hidden_size=d_model, num_hidden_layers=layers, num_attention_heads=num_heads, intermediate_size=2 * d_model,
            max_position_embeddings=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
            pad_token_id=tok.pad_token_id, is_decoder=decoder, add_cross_attention=decoder,
        )

    # Built from one EncoderDecoderConfig (not from two models), so every submodule shares the config that
    # set_attn_implementation and save_pretrained see, as after loading a checkpoint.
    both = EncoderDecoderConfig.from_encoder_decoder_configs(config(encoder_layers, False), config(decoder_layers, True))
    both.decoder_start_token_id, both.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model = EncoderDecoderModel(config=both)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 1 and name.endswith(".bias"):
                param.normal_(0.0, 0.2)  # biases start at zero: make them matter
    return _tiny(model, tok, f"tiny-bert2bert-{encoder_layers}x{decoder_layers}")


def tiny_t5gemma_genir(encoder_layers: int = 2, decoder_layers: int = 3, d_model: int = 32, num_heads: int = 4, num_kv_heads: int = 2,
                       sliding_window: int = 3, n_docs: int = 20, seed: int = 0) -> GenIRModel:
    """A random tiny T5Gemma GenIR model (sandwich RMSNorms, RoPE, GQA, GeGLU, soft-capping, sliding windows) on the toy tokenizer.

    Example:
        >>> gm = tiny_t5gemma_genir()
        >>> gm.adapter.family, gm.adapter.n_kv_heads          # ('t5gemma', 2)

    The sliding window (3 tokens, alternate layers) is shorter than the toy
    queries and the soft caps are low, so both shape attention in tests;
    weights are drawn with std 0.3 so attention is far from uniform.
    """
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)

    def side(layers):
        return T5GemmaModuleConfig(
            vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model, num_hidden_layers=layers, num_attention_heads=num_heads,
            num_key_value_heads=num_kv_heads, head_dim=d_model // num_heads, query_pre_attn_scalar=d_model // num_heads, sliding_window=sliding_window,
            attn_logit_softcapping=2.0, final_logit_softcapping=5.0, max_position_embeddings=128,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
        )

    config = T5GemmaConfig(encoder=side(encoder_layers), decoder=side(decoder_layers), vocab_size=len(tok), dropout_rate=0.0, attention_dropout=0.0)
    model = T5GemmaForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
            elif name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                param.normal_(0.0, 0.3)  # Gemma norms scale by (1 + w) with w = 0 at init: make them matter
    return _tiny(model, tok, f"tiny-t5gemma-{encoder_layers}x{decoder_layers}")


def tiny_gpt2_genir(layers: int = 3, d_model: int = 32, num_heads: int = 4, n_docs: int = 20, seed: int = 0, n_positions: int = 128) -> GenIRModel:
    """A random tiny GPT-2 GenIR model (LayerNorm with bias, learned positions, fused Conv1D attention, GELU MLP) on the toy tokenizer.

    Example:
        >>> gm = tiny_gpt2_genir()
        >>> gm.adapter.family, gm.adapter.n_heads     # ('gpt2', 4)

    Weights and biases are re-drawn larger than HF's initialisation, as in
    `tiny_llama_genir`; the attention output bias stays zero, so per-head
    contributions still sum to the sublayer output (a bias belongs to no head).
    """
    tok, _ = toy_tokenizer(n_docs, seed)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tok), n_embd=d_model, n_layer=layers, n_head=num_heads, n_positions=n_positions, n_inner=2 * d_model,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id, tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2:
                param.normal_(0.0, 0.3)
            elif name.endswith("attn.c_proj.bias"):
                param.zero_()
            elif name.endswith(".weight"):  # LayerNorm gains
                param.normal_(1.0, 0.1)
            else:
                param.normal_(0.0, 0.3)
    name = f"tiny-gpt2-{layers}"
    return GenIRModel(model, tok, AtomicDocids.detect(tok), adapter_for(model), name, name)


def toy_queries(gm: GenIRModel, n: int, seed: int = 0) -> list[str]:
    """Queries of varied length (so batches need padding) from the toy corpus vocabulary.

    Example:
        >>> toy_queries(tiny_genir(), 4)      # four query texts, seeded
    """
    _, ds = toy_tokenizer(len(gm.docids), 0)
    texts = [q.text for q in ds.queries]
    return random.Random(seed).sample(texts, min(n, len(texts)))


@torch.no_grad()
def planted_cross_attention(gm: GenIRModel, layers: list[int], heads: list[int] | None = None, boost: float = 4.0) -> GenIRModel:
    """Zero every decoder cross-attention except `layers` (and, if given, except `heads` in them).

    Example:
        >>> gm = planted_cross_attention(tiny_genir(decoder_layers=6), layers=[2, 3])
        >>> # component patching / the logit lens must now single out decoder layers 2 and 3

    The kept projections are scaled by `boost` so the planted path dominates
    the residual stream, as the bridging stage does in trained models.
    """
    adapter = gm.adapter
    adapter.require("cross_attn", analysis="planting a cross-attention mechanism")
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

    Example:
        >>> lin = linearised(tiny_genir())        # attribution patching must now be exact

    Norms (sublayer and final) and the MLP nonlinearity become identities
    (the adapter lists them: `adapter.linearisable_modules()`), and with
    `uniform_attention` every query projection is zeroed, so attention
    weights no longer depend on activations (they are fixed by the position
    bias and the padding mask). First-order methods such as attribution
    patching must then be exact; with `uniform_attention=False` the attention
    softmax is the only nonlinearity left.
    """
    model = gm.hf_model
    for path in gm.adapter.linearisable_modules():
        parent, _, name = path.rpartition(".")
        setattr(module_at(model, parent), name, torch.nn.Identity())
    if uniform_attention:
        for side in gm.adapter.sides:
            for site in gm.adapter.components(side, ATTENTION_KINDS):
                attn = gm.adapter.attention(site, None)
                attn.w_q.zero_()
                if attn.b_q is not None:  # a query bias (BART, BERT, Qwen2) would still make the scores depend on the keys
                    attn.b_q.zero_()
    # Modules were swapped, so the nnsight wrapper is rebuilt around the new tree.
    return GenIRModel(model, gm.tokenizer, gm.docids, adapter_for(model), f"{gm.name}-linear", gm.path)


# -- planted attention heads (decoder-only models) -------------------------------------------------


def _embedding_matrices(gm) -> list[torch.Tensor]:
    """Input embeddings, output embeddings (when untied) and learned position embeddings, as (rows, d_model) weights."""
    model = gm.hf_model
    mats = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings().weight
    if out.data_ptr() != mats[0].data_ptr():
        mats.append(out)
    wpe = getattr(getattr(model, "transformer", None), "wpe", None)
    if wpe is not None:
        mats.append(wpe.weight)
    return mats


@torch.no_grad()
def mark_tokens(gm: GenIRModel, token_ids: list[int], dim: int, amount: float = 30.0) -> GenIRModel:
    """Give `token_ids` a large component `amount` on residual dimension `dim`, which no other token or position has.

    Example:
        >>> mark_tokens(gm, [tok.convert_tokens_to_ids("zorblax")], dim=0)   # only zorblax carries dimension 0
    """
    for mat in _embedding_matrices(gm):
        mat[:, dim] = 0.0
    gm.hf_model.get_input_embeddings().weight[token_ids, dim] = amount
    gm.hf_model.get_output_embeddings().weight[token_ids, dim] = amount
    return gm


def _mlp_writes_nothing_to(gm: GenIRModel, layer: int, dims: tuple[int, ...]) -> None:
    """Zero what a layer's MLP writes to residual dimensions `dims` (Llama down_proj rows, GPT-2 Conv1D c_proj columns and bias)."""
    mlp = module_at(gm.hf_model, gm.adapter.hook(Site("decoder", layer, "mlp")).path)
    dims = list(dims)
    if hasattr(mlp, "down_proj"):
        mlp.down_proj.weight[dims, :] = 0.0
    else:
        mlp.c_proj.weight[:, dims] = 0.0
        mlp.c_proj.bias[dims] = 0.0


@torch.no_grad()
def plant_attention_head(gm: GenIRModel, layer: int, head: int, query_dim: int, key_dim: int, strength: float = 4.0,
                         copy: bool = False, blind_dims: tuple[int, ...] = ()) -> GenIRModel:
    """Make self-attention head (layer, head) attend from positions that carry `query_dim` to positions that carry `key_dim`.

    Example:
        >>> mark_tokens(gm, [needle_token], dim=0); mark_tokens(gm, [query_token], dim=1)
        >>> plant_attention_head(gm, 1, 2, query_dim=1, key_dim=0, copy=True)   # head (1, 2) copies the needle token

    The head's queries and keys read one residual dimension each, through the
    within-head dimension of the lowest rotary frequency (RoPE barely turns it
    over a short context; learned-position models are unaffected). With
    `copy`, the head also writes what it reads on `key_dim` back to `key_dim`
    of the residual, so tokens marked there (mark_tokens) win the next-token
    logits: a copying head. Every other head in every layer is made blind to
    `blind_dims` (their queries and keys ignore those dimensions, and neither
    they nor any MLP write to them), so only the planted head's attention
    depends on the marked tokens.
    """
    adapter = gm.adapter
    if adapter.n_kv_heads != adapter.n_heads:
        raise GenIRError("plant_attention_head needs one key/value head per query head (build the model with num_kv_heads=num_heads)")
    d = adapter.d_head
    j = d // 2 - 1  # pairs with j + d/2 under rotate_half: the slowest rotary frequency
    for other_layer in range(adapter.n_layers("decoder")):
        attn = adapter.attention(Site("decoder", other_layer, "self_attn"), None)
        for h in range(adapter.n_heads):
            if (other_layer, h) != (layer, head):
                for dim in blind_dims:
                    attn.w_q[h * d:(h + 1) * d, dim] = 0.0
                    attn.w_k[h * d:(h + 1) * d, dim] = 0.0
        out = adapter.output_weight(Site("decoder", other_layer, "self_attn"))
        for h in range(adapter.n_heads):
            if (other_layer, h) != (layer, head):
                out[list(blind_dims), h * d:(h + 1) * d] = 0.0  # and no other head writes them
        _mlp_writes_nothing_to(gm, other_layer, blind_dims)
    attn = adapter.attention(Site("decoder", layer, "self_attn"), None)
    rows_q = rows_k = slice(head * d, (head + 1) * d)
    kv = head
    attn.w_q[rows_q] = 0.0
    attn.w_k[rows_k] = 0.0
    for bias, rows in ((attn.b_q, rows_q), (attn.b_k, rows_k)):
        if bias is not None:
            bias[rows] = 0.0
    attn.w_q[head * d + j, query_dim] = strength
    attn.w_k[kv * d + j, key_dim] = strength
    if copy:
        attn.w_v[rows_k] = 0.0
        if attn.b_v is not None:
            attn.b_v[rows_k] = 0.0
        attn.w_v[kv * d, key_dim] = 1.0
        out = adapter.output_weight(Site("decoder", layer, "self_attn"))  # (d_model, H*d) view of the projection
        out[:, head * d:(head + 1) * d] = 0.0
        out[key_dim, head * d] = strength * 4
    gm.name = f"{gm.name}-planted-L{layer}H{head}"
    return gm


@torch.no_grad()
def plant_cross_attention_head(gm: GenIRModel, layer: int, head: int, query_dim: int, key_dim: int, strength: float = 4.0) -> GenIRModel:
    """Make cross-attention head (layer, head) of an encoder-decoder model attend from decoder positions carrying `query_dim`
    to encoder positions carrying `key_dim`, and copy `key_dim` into the residual (the encoder-decoder twin of plant_attention_head).

    Example:
        >>> mark_tokens(gm, [query_word, docid], dim=0); mark_tokens(gm, [gm.decoder_start_id], dim=1)
        >>> plant_cross_attention_head(gm, 1, 2, query_dim=1, key_dim=0)   # the docid marked like the word wins when the word is in the query

    Every other sublayer (encoder and decoder, attention and MLP) is made blind to and silent on both dimensions,
    so the encoder output at a marked token keeps only its embedding's mark and only the planted head reads it.
    """
    adapter = gm.adapter
    adapter.require("cross_attn", analysis="planting a cross-attention head")
    d, dims = adapter.d_head, [query_dim, key_dim]
    for side in adapter.sides:
        for site in adapter.components(side):
            planted = (side, site.layer, site.kind) == ("decoder", layer, "cross_attn")
            if site.kind == "mlp":
                mlp = module_at(gm.hf_model, adapter.hook(site).path)
                mlp.wo.weight[dims, :] = 0.0
                continue
            attn, out = adapter.attention(site, None), adapter.output_weight(site)
            for h in range(adapter.n_heads):
                if planted and h == head:
                    continue
                rows = slice(h * d, (h + 1) * d)
                for w in (attn.w_q, attn.w_k, attn.w_v):
                    w[rows, query_dim] = 0.0
                    w[rows, key_dim] = 0.0
                out[dims, rows] = 0.0
    attn = adapter.attention(Site("decoder", layer, "cross_attn"), None)
    rows = slice(head * d, (head + 1) * d)
    for w in (attn.w_q, attn.w_k, attn.w_v):
        w[rows] = 0.0
    attn.w_q[head * d, query_dim] = strength
    attn.w_k[head * d, key_dim] = strength
    attn.w_v[head * d, key_dim] = 1.0
    out = adapter.output_weight(Site("decoder", layer, "cross_attn"))
    out[:, rows] = 0.0
    out[key_dim, head * d] = strength * 4
    gm.name = f"{gm.name}-planted-cross-L{layer}H{head}"
    return gm


# -- a planted two-token docid model (per-step analyses) --------------------------------------------


@torch.no_grad()
def planted_step_model(decoder_layers: int = 4, step_layers: tuple[int, int] = (1, 2), n_docs: int = 16, d_model: int = 32, num_heads: int = 4,
                       seed: int = 0, gate: float = 10.0, sharpness: float = 2.0) -> GenIRModel:
    """A tiny T5 with a two-token docid scheme whose step 0 reads the query through the cross-attention of decoder layer
    `step_layers[0]` only, and step 1 through that of `step_layers[1]` only (weights edited, so the answer is known).

    Example:
        >>> gm = planted_step_model(decoder_layers=4, step_layers=(1, 2))
        >>> gm.docids.sequence("5"), gm.docids.max_length        # two docid tokens per document, (first, second)

    How: the encoder's layers are silenced, so its output is the (normed) token embeddings; the query's end-of-sequence
    token embeds on a `sink` dimension alone, so attending to it reads a zero value. The decoder start token embeds +`gate`
    on a `gate` dimension and every first docid token -`gate` (no sublayer writes that dimension, so it tells each decoder
    position which step it decodes). In the two planted layers one query coordinate per head is the gate and the matching
    key coordinate the sink, with opposite signs: layer `step_layers[0]` attends to the sink (reads nothing) when the gate is
    negative (step 1), layer `step_layers[1]` when it is positive (step 0). Every other cross-attention is zeroed, and so
    is decoder self-attention (a later position would otherwise read what the earlier step's layer wrote at its position).
    """
    from .docids import SequenceDocids

    gm = planted_cross_attention(tiny_genir(decoder_layers=decoder_layers, d_model=d_model, num_heads=num_heads, n_docs=max(n_docs, 8), seed=seed),
                                 list(step_layers))
    adapter, model, tok = gm.adapter, gm.hf_model, gm.tokenizer
    first_tokens, second_tokens = _docid_alphabets(gm, n_docs)
    sequences = {str(d): (first_tokens[d // len(second_tokens)], second_tokens[d % len(second_tokens)]) for d in range(n_docs)}
    gate_dim, sink_dim = d_model - 1, d_model - 2
    embedding = model.get_input_embeddings().weight
    embedding[:, [gate_dim, sink_dim]] = 0
    embedding[tok.eos_token_id] = 0
    embedding[tok.eos_token_id, sink_dim] = gate
    embedding[gm.decoder_start_id, gate_dim] = gate
    embedding[first_tokens, gate_dim] = -gate
    for side in adapter.sides:
        for site in adapter.components(side):
            # T5's MLP output projection; the adapter names the attention projections
            weight = adapter.output_projection(site).weight if site.kind in ATTENTION_KINDS else module_at(model, f"{adapter._sublayer_path(side, site.layer, 'mlp')}.DenseReluDense.wo").weight
            if side == "encoder" or site.kind == "self_attn":
                # the encoder output is the normed embeddings (the sink stays pure); decoder positions do not read each other,
                # so step t reads the query only through its own planted layer (not through an earlier position's)
                weight.zero_()
            else:
                weight[[gate_dim, sink_dim]] = 0  # nothing writes the gate or the sink ...
                for read in _input_weights(gm, site):
                    read[:, [gate_dim, sink_dim]] = 0  # ... and nothing but the planted query coordinates reads them
    d_head = adapter.d_head
    for layer, sign in zip(step_layers, (-1.0, 1.0)):
        attn = adapter.attention(Site("decoder", layer, "cross_attn"), None)
        for h in range(adapter.n_heads):
            row = h * d_head
            attn.w_q[row] = 0
            attn.w_q[row, gate_dim] = sign * sharpness
            attn.w_k[row] = 0
            attn.w_k[row, sink_dim] = sharpness
        attn.w_v[:, sink_dim] = 0  # the sink's value is zero: attending to it reads nothing
    scheme = SequenceDocids("semantic", sequences, tok.eos_token_id, source=f"planted two-token docids of {gm.name}")
    name = f"tiny-t5-steps-{step_layers[0]}-{step_layers[1]}"
    return GenIRModel(model, tok, scheme, adapter_for(model), name, name)


def _input_weights(gm: GenIRModel, site: Site) -> list[torch.Tensor]:
    """The weights a decoder sublayer reads the residual stream with (attention q/k/v, MLP input)."""
    if site.kind in ATTENTION_KINDS:
        attn = gm.adapter.attention(site, None)
        return [attn.w_q] if site.kind == "cross_attn" else [attn.w_q, attn.w_k, attn.w_v]
    return [gm.adapter.mlp_in_weight(site.side, site.layer)]


def _docid_alphabets(gm: GenIRModel, n_docs: int) -> tuple[list[int], list[int]]:
    """Vocabulary ids of the first and second docid tokens of `planted_step_model` (the toy tokenizer's docid tokens)."""
    side = max(2, int(n_docs ** 0.5))
    while n_docs % side:
        side += 1
    tokens = gm.docids.vocab_ids.tolist()
    n_first = n_docs // side
    if n_first + side > len(tokens):
        raise GenIRError(f"{n_docs} two-token docids need {n_first + side} docid tokens; the toy tokenizer has {len(tokens)}")
    return tokens[:n_first], tokens[n_first : n_first + side]



# -- a planted needle-copying head (retrieval heads) ------------------------------------------------

COPY_HEAD = (1, 2)  # (layer, head) of `planted_copy_model`'s copying head


def copy_vocabulary(gm: GenIRModel) -> list[str]:
    """200 plain words of the toy tokenizer, sorted: the first is the needle's answer of `planted_copy_model`, the rest haystack."""
    return sorted(w for w in gm.tokenizer.get_vocab() if w.isalpha() and len(w) > 3)[:200]


@torch.no_grad()
def planted_copy_model(family: str = "llama") -> tuple[GenIRModel, list[str]]:
    """A tiny two-layer decoder-only model (`family` llama or gpt2) whose head COPY_HEAD attends from every position to the
    marked answer word and writes it to the logits: a perfect copying (retrieval) head; returns (model, `copy_vocabulary`).

    Example:
        >>> gm, vocab = planted_copy_model("gpt2")
        >>> retrieval_scores(gm, copy_needle_trials(vocab)).scores    # COPY_HEAD scores 1, every other head 0
    """
    factories = {"llama": lambda: tiny_llama_genir(layers=2, num_kv_heads=4), "gpt2": lambda: tiny_gpt2_genir(layers=2)}
    if family not in factories:
        raise GenIRError(f"planted_copy_model builds {', '.join(factories)} models, not {family!r}")
    gm = factories[family]()
    vocab = copy_vocabulary(gm)
    mark_tokens(gm, [gm.tokenizer.convert_tokens_to_ids(vocab[0])], dim=0, amount=6.0)
    gm.hf_model.get_input_embeddings().weight[:, 1] = 3.0  # every token carries dimension 1: a constant query
    plant_attention_head(gm, *COPY_HEAD, query_dim=1, key_dim=0, copy=True, blind_dims=(0, 1))
    return gm, vocab


def copy_needle_trials(vocab: list[str], n: int = 12, seed: int = 0, context: int = 100):
    """`n` NIAH trials for `planted_copy_model`: `context` haystack words with the needle "<word> <answer> <word>" at a random depth;
    the answer is vocab[0], the one word the planted head copies."""
    from .data.niah import NiahTrial

    rng, marked, trials = random.Random(seed), vocab[0], []
    for i in range(n):
        hay = [rng.choice(vocab[1:]) for _ in range(context)]
        needle = " ".join([rng.choice(vocab[1:]), marked, rng.choice(vocab[1:])])
        at = rng.randrange(5, context - 5)
        prompt = " ".join(hay[:at] + [needle] + hay[at:])
        trials.append(NiahTrial(f"t{i}", context, at / context, prompt, marked, needle, "q"))
    return trials


# -- planted decoder stages (priming, bridging, interaction) ----------------------------------------


@torch.no_grad()
def planted_stages(priming: tuple[int, ...] = (0, 1), bridging: tuple[int, ...] = (2, 3), interaction: tuple[int, ...] = (4, 5),
                   idle: tuple[int, ...] = (), inert: tuple[int, ...] = (), decoder_layers: int | None = None, n_docs: int = 20,
                   seed: int = 0, queries: list[str] | None = None) -> GenIRModel:
    """A tiny T5 whose decoder has the paper's stages in known layers (weights edited), for the stage localiser.

    Example:
        >>> gm = planted_stages(priming=(0, 1), bridging=(2, 3), interaction=(4, 5))
        >>> gm = planted_stages(priming=(), bridging=(0, 1, 2), interaction=(3, 4, 5))          # two stages, no priming
        >>> gm = planted_stages(bridging=(2, 3), idle=(4, 5), interaction=(6, 7))               # a fourth, idle stage
        >>> gm = planted_stages(priming=(), inert=(0, 1), bridging=(2, 3), interaction=(4, 5))  # dispensable MLPs first

    The residual stream (d_model 32) is cut into a bias dimension, which the decoder start token holds (10), a gate,
    a sink, an idle dimension, 8 query-code dimensions (word embeddings live there) and 20 docid dimensions (docid
    embeddings live there). The encoder is silenced, so its output is each token's normed embedding; the
    end-of-query token embeds on the sink alone.
    - `priming` MLPs write a constant to the gate (12 in all, an equal share per layer). Each bridging
      cross-attention head scores the sink by bias - gate: without the whole gate it attends to the sink, whose
      value is zero, and reads nothing. Zeroing any priming layer breaks retrieval; mean-ablating it changes nothing.
      With no priming layer the start token holds the gate itself.
    - `bridging` cross-attention averages the query's words into the code dimensions (every bridging layer alike).
    - `interaction` MLPs (identical) read the code through thresholds (the bias dimension times a constant, set
      from `queries`, default 64 toy queries, so that each unit fires for about 30% of them), write docid
      directions (norm ~1), and take back half the gate between them: their output points against the residual.
    - `idle` self-attention writes a constant to the idle dimension; nothing reads it.
    - `inert` MLPs write a constant to the idle dimension: MLP-dominated layers that cost nothing when zeroed or
      mean-ablated (dispensable, so not priming, though mean-ablating them is cheap).
    Every other sublayer is zeroed. Each layer must be in one set; `decoder_layers` defaults to the layers named.
    """
    sets = {"priming": tuple(priming), "bridging": tuple(bridging), "interaction": tuple(interaction), "idle": tuple(idle), "inert": tuple(inert)}
    named = [l for layers in sets.values() for l in layers]
    n_layers = decoder_layers or (max(named) + 1)
    if sorted(named) != list(range(n_layers)):
        raise GenIRError(f"planted_stages: every decoder layer 0..{n_layers - 1} must be in exactly one of {', '.join(sets)}; got {sets}")
    if not bridging or not interaction:
        raise GenIRError("planted_stages needs bridging and interaction layers (the query must reach the docids)")
    if max(sets["priming"], default=-1) > min(bridging) or max(bridging) > min(interaction):
        raise GenIRError("planted_stages: priming layers come before bridging, bridging before interaction")
    d_model, heads, d_head = 32, 4, 8
    bias, gate, sink, idle_dim = 0, 1, 2, 3
    code, docid_dims = list(range(4, 12)), list(range(12, 32))
    bias_value, gate_total, sharpness, copy_gain = 10.0, 12.0, 4.0, 0.5
    against = gate_total / (2 * len(interaction))  # the interaction layers take back half the gate between them

    gm = tiny_genir(encoder_layers=2, decoder_layers=n_layers, d_model=d_model, num_heads=heads, n_docs=n_docs, seed=seed)
    model, tok = gm.hf_model, gm.tokenizer
    g = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        if "layer_norm" in name:
            param.fill_(1.0)
    for block in model.encoder.block:  # silenced: the encoder output is the normed token embeddings
        block.layer[0].SelfAttention.o.weight.zero_()
        block.layer[1].DenseReluDense.wo.weight.zero_()
    emb = model.shared.weight
    emb.zero_()
    docids = gm.docids.vocab_ids.tolist()
    words = [i for i in range(len(tok)) if i not in set(docids) | {tok.eos_token_id, model.config.decoder_start_token_id}]
    emb[torch.tensor(words)[:, None], torch.tensor(code)[None, :]] = torch.randn(len(words), len(code), generator=g)
    emb[torch.tensor(docids)[:, None], torch.tensor(docid_dims)[None, :]] = torch.randn(len(docids), len(docid_dims), generator=g)
    emb[tok.eos_token_id, sink] = 1.0
    start = model.config.decoder_start_token_id
    emb[start, bias] = bias_value
    if not priming:
        emb[start, gate] = gate_total

    rms = lambda v: float((v.pow(2).mean()) ** 0.5)  # noqa: E731  (T5's RMS norm, weight 1)
    gate_so_far = 0.0 if priming else gate_total
    for layer, block in enumerate(model.decoder.block):
        self_attn, cross, mlp = block.layer[0].SelfAttention, block.layer[1].EncDecAttention, block.layer[2].DenseReluDense
        for w in (self_attn.o.weight, cross.o.weight, mlp.wi.weight, mlp.wo.weight):
            w.zero_()
        if layer in priming:
            x = torch.zeros(d_model)
            x[bias], x[gate] = bias_value, gate_so_far
            mlp.wi.weight[0, bias] = 1.0
            share = gate_total / len(priming)
            mlp.wo.weight[gate, 0] = share * rms(x) / bias_value  # the unit's activation is bias / rms(x)
            gate_so_far += share
        elif layer in bridging:
            for w in (cross.q.weight, cross.k.weight, cross.v.weight):
                w.zero_()
            for h in range(heads):
                cross.q.weight[h * d_head, bias] = sharpness
                cross.q.weight[h * d_head, gate] = -sharpness
                cross.k.weight[h * d_head, sink] = sharpness
            for j, dim in enumerate(code):  # head 0 copies the code dimensions of the words it attends to
                cross.v.weight[j, dim] = 1.0
                cross.o.weight[dim, j] = copy_gain
        elif layer in idle:
            self_attn.v.weight.zero_()
            self_attn.v.weight[0, bias] = 1.0
            self_attn.o.weight[idle_dim, 0] = 3.0
        elif layer in inert:
            mlp.wi.weight[0, bias] = 1.0
            mlp.wo.weight[idle_dim, 0] = 3.0
    # interaction: thresholds and output scale from the code the queries bring to the first interaction layer
    texts = queries or toy_queries(gm, 64)
    batch = tok(texts, padding=True, return_tensors="pt")
    first = min(interaction)
    x = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=torch.full((len(texts), 1), start),
              output_hidden_states=True).decoder_hidden_states[first][:, 0]
    n_units = model.config.d_ff - 1  # unit 0 is the constant one
    w_in = torch.randn(n_units, len(code), generator=g)
    pre = x[:, code] @ w_in.T
    threshold = pre.quantile(0.7, dim=0)
    scale = x.pow(2).mean(1).sqrt()  # each query's RMS at the interaction input
    w_out = torch.randn(len(docid_dims), n_units, generator=g)
    hidden = torch.relu(pre - threshold) / scale[:, None]
    w_out *= 1.0 / float((hidden @ w_out.T).norm(dim=1).median())  # docid writes of norm ~1, small beside the gate they take back
    for layer in interaction:
        mlp = model.decoder.block[layer].layer[2].DenseReluDense
        mlp.wi.weight[1:, code] = w_in
        mlp.wi.weight[1:, bias] = -threshold / bias_value  # the threshold rides on the constant bias dimension
        mlp.wi.weight[0, bias] = 1.0
        mlp.wo.weight[torch.tensor(docid_dims)[:, None], torch.arange(1, n_units + 1)[None, :]] = w_out
        mlp.wo.weight[gate, 0] = -against * float(scale.median()) / bias_value  # writes ~ -against on the gate: against the residual
    gm.name = (f"tiny-t5-stages-p{len(priming)}" + (f"-n{len(inert)}" if inert else "") + f"-b{len(bridging)}" + (f"-u{len(idle)}" if idle else "")
               + f"-i{len(interaction)}")
    return gm
