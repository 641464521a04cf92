"""T5-family adapter (T5, mT5, UMT5): encoder-decoder, pre-norm RMSNorm, no biases, relative position bias, tied-embedding output scaling.

    adapter = T5Adapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))
    -> Hook(path="decoder.block.2.layer.1.EncDecAttention", io="output", index=0)
    adapter.model_inputs(batch)   # input_ids or cached encoder_outputs, attention_mask, decoder_input_ids (start token)
"""
from __future__ import annotations

import torch
from transformers import AutoModelForSeq2SeqLM
from transformers.modeling_outputs import BaseModelOutput

from ...errors import GenIRError
from ..components import ATTENTION_KINDS, Site
from .attention import Attention
from .base import Adapter, Hook, module_at, rms_linearised
from .cross_cache import filled_cross_cache


class T5Attention(Attention):
    """T5 attention: unscaled scores, relative position bias on self-attention (computed by each stack's layer 0)."""

    def __init__(self, bias_module=None, **kwargs):
        super().__init__(**kwargs)
        self.bias_module = bias_module  # the stack's layer-0 attention that owns `relative_attention_bias`

    def _position_bias(self, positions, key_length):
        if self.bias_module is None:
            return None
        m = self.bias_module
        # Only the requested query rows, never the full T x T table (T5Attention.compute_bias, row by row).
        relative = torch.arange(key_length, device=positions.device)[None, :] - positions[:, None]
        buckets = m._relative_position_bucket(relative, bidirectional=not m.is_decoder, num_buckets=m.relative_attention_num_buckets,
                                              max_distance=m.relative_attention_max_distance)
        return m.relative_attention_bias(buckets).permute(2, 0, 1)  # (H, Tq, T)


class T5Adapter(Adapter):
    """T5, mT5 and other `T5ForConditionalGeneration`-shaped models (pre-norm, no biases)."""

    family = "t5"
    MODEL_TYPES = ("t5", "mt5", "umt5")
    sides = ("encoder", "decoder")
    SUBLAYERS = {"encoder": ("self_attn", "mlp"), "decoder": ("self_attn", "cross_attn", "mlp")}
    auto_class = AutoModelForSeq2SeqLM
    padding_side = "right"
    query_reading_kind = "cross_attn"
    _MODULE = {"self_attn": "SelfAttention", "cross_attn": "EncDecAttention", "mlp": "DenseReluDense"}

    def n_layers(self, side):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: no {side} in a {self.family} model")
        return self.config.num_layers if side == "encoder" else self.config.num_decoder_layers

    @property
    def n_heads(self):
        return self.config.num_heads

    @property
    def d_head(self):
        return self.config.d_kv

    @property
    def d_model(self):
        return self.config.d_model

    @property
    def output_scale(self):
        # transformers 5 names the flag scale_decoder_outputs; older configs
        # imply it by tied embeddings (T5 scales by d_model^-0.5 when tied).
        scale = getattr(self.config, "scale_decoder_outputs", None)
        if self.config.model_type == "mt5":
            scale = False  # transformers 5's mT5 never rescales, and its config forces tie_word_embeddings=True
        if scale is None:
            scale = getattr(self.config, "tie_word_embeddings", True)
        return self.config.d_model ** -0.5 if scale else 1.0

    # -- inputs ---------------------------------------------------------------------------------
    def start_ids(self, n):
        start = self.config.decoder_start_token_id
        if start is None:
            raise GenIRError(f"{self.name}: config has no decoder_start_token_id")
        return torch.full((n, 1), start, dtype=torch.long, device=self.model.device)

    def model_inputs(self, batch):
        dec = batch.decoder_input_ids if batch.decoder_input_ids is not None else self.start_ids(len(batch)).to(batch.input_ids.device)
        # No cache: one step is run, and a cache would hold every layer's cross-attention keys/values for every row.
        kwargs = {"attention_mask": batch.attention_mask, "decoder_input_ids": dec, "use_cache": False}
        if batch.encoder_hidden is not None:
            kwargs["encoder_outputs"] = BaseModelOutput(last_hidden_state=batch.encoder_hidden)
        else:
            kwargs["input_ids"] = batch.input_ids
        if batch.cross_keys_values is not None:
            # Keys/values projected once per query: the one cache this pass keeps, filled before it starts.
            kwargs["cache"], kwargs["use_cache"] = filled_cross_cache(batch.cross_keys_values), True
        return kwargs

    @torch.no_grad()
    def cross_keys_values(self, encoder_hidden):
        out = []
        for layer in range(self.n_layers("decoder")):
            attn = self._module(Site("decoder", layer, "cross_attn"))
            shape = (*encoder_hidden.shape[:-1], -1, attn.key_value_proj_dim)
            out.append((attn.k(encoder_hidden).view(shape).transpose(1, 2), attn.v(encoder_hidden).view(shape).transpose(1, 2)))
        return out

    @property
    def block_output_is_resid_post(self):
        # T5Block returns its feed-forward sublayer's output (the resid_post hook) first; in float16 it clamps infinities
        # first, which changes no finite value.
        return True

    @torch.no_grad()
    def encode(self, batch):
        hidden = self.model.get_encoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        return type(batch)(batch.input_ids, batch.attention_mask, hidden, batch.decoder_input_ids)

    # -- where things are -----------------------------------------------------------------------
    def _sublayer_path(self, side, layer, kind):
        return f"{side}.block.{layer}.layer.{self.kinds(side).index(kind)}"

    def block_path(self, side, layer):
        return f"{side}.block.{layer}"

    def _module(self, site):
        return module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.{self._MODULE[site.kind]}")

    def hook(self, site):
        self.validate(site)
        if site.layer < 0:
            return Hook(f"{site.side}.final_layer_norm", "output")
        if not site.kind:
            kinds = self.kinds(site.side)
            kind = kinds[0] if site.facet == "resid_pre" else kinds[-1]
            return self.hook(Site(site.side, site.layer, kind, site.facet))
        path = self._sublayer_path(site.side, site.layer, site.kind)
        tuple_out = site.kind in ATTENTION_KINDS
        if site.facet == "resid_pre":
            return Hook(path, "input")
        if site.facet == "resid_post":
            return Hook(path, "output", 0 if tuple_out else None)
        module = f"{path}.{self._MODULE[site.kind]}"
        if site.facet == "heads":
            return Hook(f"{module}.o", "input")
        return Hook(module, "output", 0 if tuple_out else None)

    def output_projection(self, site):
        return self._module(site).o

    def final_norm(self, side):
        return module_at(self.model, f"{side}.final_layer_norm")

    def sublayer_norm(self, site):
        return module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.layer_norm")

    def linearised_norm(self, site, resid_pre, parts):
        # T5's norm is RMSNorm without bias: weight * x / rms(x).
        return rms_linearised(self.sublayer_norm(site), resid_pre, parts)

    def linearisable_modules(self):
        norms = [f"{side}.final_layer_norm" for side in self.sides]
        for side in self.sides:
            for layer in range(self.n_layers(side)):
                norms += [f"{self._sublayer_path(side, layer, kind)}.layer_norm" for kind in self.kinds(side)]
                ff = module_at(self.model, f"{self._sublayer_path(side, layer, 'mlp')}.DenseReluDense")
                if not hasattr(ff, "wi"):
                    raise GenIRError(f"{self.name}: a gated MLP (wi_0 * act(wi_1)) cannot be made affine by replacing its activation")
                norms.append(f"{self._sublayer_path(side, layer, 'mlp')}.DenseReluDense.act")
        return norms

    def mlp_in_weight(self, side, layer):
        ff = module_at(self.model, f"{self._sublayer_path(side, layer, 'mlp')}.DenseReluDense")
        # gated-GELU T5 (v1.1, Flan-T5): hidden = act(wi_0 x) * wi_1 x; wi_1 is the linear input, wi_0 the gate (mlp_gate)
        return ff.wi.weight if hasattr(ff, "wi") else ff.wi_1.weight

    def mlp_gate(self, side, layer):
        ff = module_at(self.model, f"{self._sublayer_path(side, layer, 'mlp')}.DenseReluDense")
        return (ff.wi_0.weight, ff.act) if hasattr(ff, "wi_0") else None

    def attention(self, site, batch):
        self.validate(site)
        attn = self._module(site)
        cross = site.kind == "cross_attn"
        bias_module = None if cross else module_at(self.model, f"{site.side}.block.0.layer.0.SelfAttention")
        # Cross-attention and encoder self-attention mask the query's padding; decoder self-attention is causal.
        key_mask = batch.attention_mask if batch is not None and (cross or site.side == "encoder") else None
        return T5Attention(
            bias_module=bias_module, w_q=attn.q.weight, w_k=attn.k.weight, w_v=attn.v.weight, n_heads=self.n_heads, d_head=self.d_head,
            norm=self.sublayer_norm(site), scale=attn.scaling if hasattr(attn, "scaling") else 1.0,  # T5 folds 1/sqrt(d) into its init
            keys_from_residual=not cross, key_mask=key_mask, causal=site.side == "decoder" and not cross,
        )
