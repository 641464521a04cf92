"""GPT-2 adapter: decoder-only, pre-norm LayerNorm (with bias), learned absolute positions, fused Conv1D q/k/v, GELU MLP.

    adapter = GPT2Adapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.self_attn.heads"))
    -> Hook(path="transformer.h.2.attn.c_proj", io="input")
    adapter.attention(site, batch)     # W_Q, W_K, W_V cut from the fused c_attn (Conv1D: x @ W + b, W is (in, out))

The inputs are those of every decoder-only family (left padding, position ids
counted from each row's first real token, which matters more here than under
RoPE: learned absolute positions would otherwise shift with the padding), so
the adapter reuses the Llama adapter's `model_inputs` and side layout and
overrides where things are. Conv1D stores its weight as (in, out), the
transpose of nn.Linear, so every weight handed out is transposed back to the
(out, in) layout the contract promises.

The attention output projection (`c_proj`) has a bias that belongs to no
head: per-head contributions sum to the sublayer output minus that bias.
"""
from __future__ import annotations

import torch

from .attention import Attention
from .base import Hook, module_at
from .llama import LlamaAdapter


def layer_norm_linearised(norm: torch.nn.LayerNorm, resid_pre: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """LayerNorm with its standard deviation frozen at `resid_pre` (..., d), applied to `parts` (..., S, d), bias left out.

    Centring is linear, so the normed parts sum to the normed residual minus the bias.
    """
    centred = resid_pre.float() - resid_pre.float().mean(-1, keepdim=True)
    inv_std = torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    parts_centred = parts - parts.mean(-1, keepdim=True)
    return norm.weight * (parts_centred * inv_std.unsqueeze(-2)).to(norm.weight.dtype)


class GPT2Adapter(LlamaAdapter):
    """`GPT2LMHeadModel`: one decoder side with self_attn and mlp, learned positions, fused Conv1D attention."""

    family = "gpt2"
    MODEL_TYPES = ("gpt2",)

    @property
    def n_kv_heads(self):
        return self.n_heads

    @property
    def d_head(self):
        return self.config.hidden_size // self.n_heads

    def _layer(self, layer):
        return f"transformer.h.{layer}"

    def hook(self, site):
        self.validate(site)
        if site.layer < 0:
            return Hook("transformer.ln_f", "output")
        layer = self._layer(site.layer)
        if not site.kind:
            return Hook(layer, "input" if site.facet == "resid_pre" else "output")
        first = site.kind == "self_attn"
        between = Hook(f"{layer}.ln_2", "input", writable=False)  # the block adds the attention output itself
        if site.facet == "resid_pre":
            return Hook(layer, "input") if first else between
        if site.facet == "resid_post":
            return between if first else Hook(layer, "output")
        if site.facet == "heads":
            return Hook(f"{layer}.attn.c_proj", "input")
        return Hook(f"{layer}.attn", "output", 0) if first else Hook(f"{layer}.mlp", "output")

    def output_projection(self, site):
        self.validate(site)
        return module_at(self.model, f"{self._layer(site.layer)}.attn.c_proj")

    def output_weight(self, site):
        return self.output_projection(site).weight.T  # Conv1D (in, out) -> (d_model, H*d_head)

    def final_norm(self, side):
        return self.model.transformer.ln_f

    def sublayer_norm(self, site):
        return module_at(self.model, f"{self._layer(site.layer)}.{'ln_1' if site.kind == 'self_attn' else 'ln_2'}")

    def linearised_norm(self, site, resid_pre, parts):
        return layer_norm_linearised(self.sublayer_norm(site), resid_pre, parts)

    def linearisable_modules(self):
        paths = ["transformer.ln_f"]
        for layer in range(self.n_layers("decoder")):
            paths += [f"{self._layer(layer)}.ln_1", f"{self._layer(layer)}.ln_2", f"{self._layer(layer)}.mlp.act"]
        return paths

    def mlp_in_weight(self, side, layer):
        self.n_layers(side)
        return module_at(self.model, f"{self._layer(layer)}.mlp.c_fc").weight.T  # (d_ff, d_model)

    def attention(self, site, batch):
        self.validate(site)
        attn = module_at(self.model, f"{self._layer(site.layer)}.attn")
        d = self.d_model
        weight, bias = attn.c_attn.weight, attn.c_attn.bias  # (d, 3d), (3d,): q | k | v along the output axis
        mask = None if batch is None else self.model_inputs(batch)["attention_mask"]
        return Attention(
            w_q=weight[:, :d].T, w_k=weight[:, d : 2 * d].T, w_v=weight[:, 2 * d :].T,
            b_q=bias[:d], b_k=bias[d : 2 * d], b_v=bias[2 * d :],
            n_heads=self.n_heads, d_head=self.d_head, norm=self.sublayer_norm(site), scale=attn.scaling,
            keys_from_residual=True, key_mask=mask, causal=True,
        )
