"""T5Gemma adapter (`T5GemmaForConditionalGeneration`): Gemma-2 layers as an encoder-decoder, sandwich RMSNorms, RoPE, GQA, soft-capping.

    adapter = T5GemmaAdapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))
    -> Hook(path="model.decoder.layers.2.post_cross_attn_layernorm", io="output")
    adapter.project(residual)     # final RMSNorm, LM head, then tanh soft-capping of the logits

Each sublayer is normed on the way in (`pre_*_layernorm`) and on the way out
(`post_*_layernorm`) and its normed output is added to the residual, so the
residual is a plain running sum as in T5 and a component's contribution
(`out`) is the output of its post-norm. Per-head contributions fold that
post-norm in with its statistics frozen at the whole sublayer's output:
head h gives (1 + w) * W_O^h z^h / rms(sum of heads), which sums exactly to
the sublayer output. The attention recompute reproduces RoPE (the stack's own
rotary module), grouped-query heads, `query_pre_attn_scalar` scaling,
tanh soft-capping of the scores and the sliding windows of sliding layers
(|i - j| <= window in the bidirectional encoder, j > i - window in the
causal decoder). The residual between sublayers is read at the next
pre-norm's input, which the layer does not take back: readable, not writable
(as in Llama). The MLP is gated (GeGLU): component reading and
`linearised` refuse it.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM

from ...errors import GenIRError
from ..components import Site
from .base import Adapter, Hook, module_at, same_across_sides
from .llama import RotaryAttention
from .t5 import T5Adapter

_ATTENTION = {"self_attn": "self_attn", "cross_attn": "cross_attn"}
_NORM_NAME = {"self_attn": "self_attn", "cross_attn": "cross_attn", "mlp": "feedforward"}


class GemmaAttention(RotaryAttention):
    """Gemma attention: RoPE on self-attention only, tanh soft-capping of the scores, optional sliding window."""

    def __init__(self, softcap=None, window=None, bidirectional=False, **kwargs):
        super().__init__(**kwargs)
        self.softcap, self.window, self.bidirectional = softcap, window, bidirectional

    def _rotate(self, x, positions):
        return x if self.rotary is None else super()._rotate(x, positions)

    def _soft_cap(self, scores):
        return scores if self.softcap is None else torch.tanh(scores / self.softcap) * self.softcap

    def _position_bias(self, positions, key_length):
        if self.window is None:
            return None
        keys = torch.arange(key_length, device=positions.device)[None, :]
        distance = positions[:, None] - keys
        outside = distance.abs() > self.window if self.bidirectional else distance >= self.window
        return torch.zeros(outside.shape, device=positions.device).masked_fill(outside, torch.finfo(torch.float32).min)[None]


class T5GemmaAdapter(Adapter):
    """`T5GemmaForConditionalGeneration` models (google/t5gemma-*): pre- and post-norm sublayers, no biases."""

    family = "t5gemma"
    MODEL_TYPES = ("t5gemma",)
    sides = ("encoder", "decoder")
    SUBLAYERS = {"encoder": ("self_attn", "mlp"), "decoder": ("self_attn", "cross_attn", "mlp")}
    auto_class = AutoModelForSeq2SeqLM
    padding_side = "right"
    query_reading_kind = "cross_attn"
    # The encoder-decoder forward signature is T5's (input_ids or encoder_outputs, attention_mask, decoder_input_ids).
    model_inputs = T5Adapter.model_inputs
    encode = T5Adapter.encode

    def __init__(self, model):
        super().__init__(model)
        if any(getattr(self.config, side).attention_bias for side in self.sides):
            raise GenIRError(f"{self.name}: T5Gemma with attention biases is not supported (a bias inside the post-norm belongs to no head)")

    def n_layers(self, side):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: no {side} in a {self.family} model")
        return getattr(self.config, side).num_hidden_layers

    def _both(self, what: str, key: str):
        return same_across_sides(self, what, getattr(self.config.encoder, key), getattr(self.config.decoder, key))

    @property
    def n_heads(self):
        return self._both("attention heads", "num_attention_heads")

    @property
    def n_kv_heads(self):
        return self._both("key/value heads", "num_key_value_heads")

    @property
    def d_head(self):
        return self._both("head width", "head_dim")

    @property
    def d_model(self):
        return self._both("width", "hidden_size")

    @property
    def output_scale(self):
        return 1.0

    def start_ids(self, n):
        # HF's T5Gemma shifts labels right with the decoder's bos token; a GenIR checkpoint may name its own start token.
        start = getattr(self.config, "decoder_start_token_id", None)
        start = self.config.decoder.bos_token_id if start is None else start
        if start is None:
            raise GenIRError(f"{self.name}: config has neither decoder_start_token_id nor decoder.bos_token_id")
        return torch.full((n, 1), start, dtype=torch.long, device=self.model.device)

    # -- where things are -----------------------------------------------------------------------
    def _layer(self, side, layer):
        return f"model.{side}.layers.{layer}"

    def _norm(self, site, where: str):
        return f"{self._layer(site.side, site.layer)}.{where}_{_NORM_NAME[site.kind]}_layernorm"

    def hook(self, site):
        self.validate(site)
        if site.layer < 0:
            return Hook(f"model.{site.side}.norm", "output")
        layer = self._layer(site.side, site.layer)
        if not site.kind:
            return Hook(layer, "input" if site.facet == "resid_pre" else "output")
        kinds = self.kinds(site.side)
        index = kinds.index(site.kind)
        if site.facet == "resid_pre":
            return Hook(layer, "input") if index == 0 else Hook(self._norm(site, "pre"), "input", writable=False)
        if site.facet == "resid_post":
            if index == len(kinds) - 1:
                return Hook(layer, "output")
            return Hook(self._norm(Site(site.side, site.layer, kinds[index + 1]), "pre"), "input", writable=False)
        if site.facet == "heads":
            return Hook(f"{layer}.{_ATTENTION[site.kind]}.o_proj", "input")
        return Hook(self._norm(site, "post"), "output")

    def output_projection(self, site):
        self.validate(site)
        return module_at(self.model, f"{self._layer(site.side, site.layer)}.{_ATTENTION[site.kind]}.o_proj")

    def final_norm(self, side):
        return module_at(self.model, f"model.{side}.norm")

    def sublayer_norm(self, site):
        return module_at(self.model, self._norm(site, "pre"))

    def linearised_norm(self, site, resid_pre, parts):
        return _gemma_rms_frozen(self.sublayer_norm(site), resid_pre.unsqueeze(-2), parts)

    def linearisable_modules(self):
        raise GenIRError(f"{self.name}: the gated MLP of a {self.family} model (down(act(gate(x)) * up(x))) stays bilinear with an identity activation; it cannot be linearised")

    def mlp_in_weight(self, side, layer):
        raise GenIRError(f"{self.name}: a gated MLP has two input weights (gate and up); component reading supports ungated MLPs only")

    def head_contributions(self, site, heads_input):
        per_head = super().head_contributions(site, heads_input)  # (..., H, d): before the post-norm
        # The post-norm's statistics are those of the whole sublayer output (the sum of the heads): frozen there, it is linear.
        return _gemma_rms_frozen(module_at(self.model, self._norm(site, "post")), per_head.sum(-2, keepdim=True), per_head)

    def attention(self, site, batch):
        self.validate(site)
        attn = module_at(self.model, f"{self._layer(site.side, site.layer)}.{_ATTENTION[site.kind]}")
        cross = site.kind == "cross_attn"
        key_mask = batch.attention_mask if batch is not None and (cross or site.side == "encoder") else None
        return GemmaAttention(
            rotary=None if cross else module_at(self.model, f"model.{site.side}.rotary_emb"), positions=None,
            softcap=attn.attn_logit_softcapping, window=None if cross else attn.sliding_window, bidirectional=site.side == "encoder",
            w_q=attn.q_proj.weight, w_k=attn.k_proj.weight, w_v=attn.v_proj.weight, n_heads=self.n_heads, d_head=self.d_head,
            norm=self.sublayer_norm(site), scale=attn.scaling, keys_from_residual=not cross, key_mask=key_mask,
            causal=site.side == "decoder" and not cross,
        )

    def unembed(self, normed):
        logits = self.model.get_output_embeddings()(normed * self.output_scale)
        cap = self.config.decoder.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap


def _gemma_rms_frozen(norm, stats_of: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """Gemma's RMSNorm ((1 + w) * x / rms(x), computed in float32) with rms taken from `stats_of` (..., 1, d), applied to `parts` (..., S, d)."""
    inv_rms = torch.rsqrt(stats_of.float().pow(2).mean(-1, keepdim=True) + norm.eps)
    return (parts.float() * inv_rms * (1.0 + norm.weight.float())).to(parts.dtype)
