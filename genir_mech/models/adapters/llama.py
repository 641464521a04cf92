"""Llama-style decoder-only adapter (Llama, Qwen2): pre-norm RMSNorm, RoPE, grouped-query attention, gated SiLU MLP.

    adapter = LlamaAdapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.self_attn.heads"))
    -> Hook(path="model.layers.2.self_attn.o_proj", io="input")
    adapter.model_inputs(batch)   # input_ids, attention_mask and position_ids counted from the mask (left padding)

A decoder-only model has one side, "decoder", with self_attn and mlp; the
query is read by self-attention, and the ranking step is the last position,
so batches are padded on the left (batched == one query at a time), and
position ids are counted from each row's first real token, as in a one-query
run (RoPE is relative, so this matters only up to rounding, but it keeps
positions exact for any absolute position scheme).

HuggingFace's LlamaDecoderLayer adds both sublayers to the residual inside
its own forward, so no module returns the residual between them: it is read
at the input of `post_attention_layernorm` and cannot be written there (the
layer keeps its own reference). Write the attention output or the layer's
resid_pre/resid_post instead.
"""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from ...errors import GenIRError
from .attention import Attention
from .base import Adapter, Hook, module_at, rms_linearised


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so left padding does not shift RoPE."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class RotaryAttention(Attention):
    """Attention with rotary position embeddings, using the model's own rotary module (so RoPE scaling variants carry over)."""

    def __init__(self, rotary=None, positions=None, **kwargs):
        super().__init__(**kwargs)
        self.rotary, self.position_ids = rotary, positions  # (B, T) position ids of the batch

    def _rotate(self, x, positions):
        if self.position_ids is None:
            pos = positions[None, :]  # no batch: positions are the token positions
        else:
            pos = self.position_ids.index_select(-1, positions)
        cos, sin = self.rotary(x, pos)  # (B or 1, Tq, d)
        return x * cos.unsqueeze(-3) + _rotate_half(x) * sin.unsqueeze(-3)


class LlamaAdapter(Adapter):
    """`LlamaForCausalLM`-shaped decoder-only models: Llama, Qwen2 (q/k/v biases)."""

    family = "llama"
    MODEL_TYPES = ("llama", "qwen2")
    sides = ("decoder",)
    SUBLAYERS = {"decoder": ("self_attn", "mlp")}
    auto_class = AutoModelForCausalLM
    padding_side = "left"
    query_reading_kind = "self_attn"

    def n_layers(self, side):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: a decoder-only {self.family} model has no {side}")
        return self.config.num_hidden_layers

    @property
    def n_heads(self):
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self):
        return self.config.num_key_value_heads or self.n_heads

    @property
    def d_head(self):
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.n_heads

    @property
    def d_model(self):
        return self.config.hidden_size

    @property
    def output_scale(self):
        return 1.0

    # -- inputs ---------------------------------------------------------------------------------
    def model_inputs(self, batch):
        ids, mask = batch.input_ids, batch.attention_mask
        if batch.decoder_input_ids is not None:
            # Tokens already decoded (multi-token docids) follow the query; the last one is the ranking step.
            ids = torch.cat([ids, batch.decoder_input_ids], 1)
            mask = torch.cat([mask, torch.ones_like(batch.decoder_input_ids)], 1)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask), "use_cache": False}

    # -- where things are -----------------------------------------------------------------------
    def _layer(self, layer):
        return f"model.layers.{layer}"

    def block_path(self, side, layer):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: a decoder-only {self.family} model has no {side}")
        return self._layer(layer)

    def hook(self, site):
        self.validate(site)
        if site.layer < 0:
            return Hook("model.norm", "output")
        layer = self._layer(site.layer)
        if not site.kind:
            return Hook(layer, "input" if site.facet == "resid_pre" else "output")
        first = site.kind == "self_attn"
        if site.facet == "resid_pre":
            return Hook(layer, "input") if first else Hook(f"{layer}.post_attention_layernorm", "input", writable=False)
        if site.facet == "resid_post":
            return Hook(f"{layer}.post_attention_layernorm", "input", writable=False) if first else Hook(layer, "output")
        if site.facet == "heads":
            return Hook(f"{layer}.self_attn.o_proj", "input")
        return Hook(f"{layer}.{site.kind}", "output", 0 if first else None)

    def output_projection(self, site):
        self.validate(site)
        return module_at(self.model, f"{self._layer(site.layer)}.self_attn.o_proj")

    def final_norm(self, side):
        return self.model.model.norm

    def sublayer_norm(self, site):
        name = "input_layernorm" if site.kind == "self_attn" else "post_attention_layernorm"
        return module_at(self.model, f"{self._layer(site.layer)}.{name}")

    def linearised_norm(self, site, resid_pre, parts):
        return rms_linearised(self.sublayer_norm(site), resid_pre, parts)

    def linearisable_modules(self):
        raise GenIRError(f"{self.name}: the gated MLP of a {self.family} model (down(act(gate(x)) * up(x))) stays bilinear with an identity activation; it cannot be linearised")

    def mlp_in_weight(self, side, layer):
        raise GenIRError(f"{self.name}: a gated MLP has two input weights (gate and up); component reading supports ungated MLPs only")

    def attention(self, site, batch):
        self.validate(site)
        attn = module_at(self.model, f"{self._layer(site.layer)}.self_attn")
        mask = None if batch is None else self.model_inputs(batch)["attention_mask"]
        return RotaryAttention(
            rotary=self.model.model.rotary_emb, positions=None if mask is None else position_ids(mask),
            w_q=attn.q_proj.weight, w_k=attn.k_proj.weight, w_v=attn.v_proj.weight,
            b_q=attn.q_proj.bias, b_k=attn.k_proj.bias, b_v=attn.v_proj.bias,
            n_heads=self.n_heads, d_head=self.d_head, norm=self.sublayer_norm(site), scale=attn.scaling,
            keys_from_residual=True, key_mask=mask, causal=True,
        )
