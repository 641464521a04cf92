"""T5-family adapter (T5, mT5, UMT5): pre-norm RMSNorm, no biases, relative position bias, tied-embedding output scaling.

    adapter = T5Adapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))
    -> Hook(path="decoder.block.2.layer.1.EncDecAttention", io="output", index=0)
"""
from __future__ import annotations

import torch

from ...errors import GenIRError
from ..components import ATTENTION_KINDS, Site
from .base import Adapter, Hook, module_at


class T5Adapter(Adapter):
    """T5, mT5 and other `T5ForConditionalGeneration`-shaped models (pre-norm, no biases)."""

    family = "t5"
    _SUBLAYER = {("encoder", "self_attn"): 0, ("encoder", "mlp"): 1, ("decoder", "self_attn"): 0, ("decoder", "cross_attn"): 1, ("decoder", "mlp"): 2}
    _MODULE = {"self_attn": "SelfAttention", "cross_attn": "EncDecAttention", "mlp": "DenseReluDense"}

    @classmethod
    def supports(cls, model):
        return model.config.model_type in {"t5", "mt5", "umt5"} and hasattr(model, "decoder") and hasattr(model.decoder, "block")

    def n_layers(self, side):
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
        if scale is None:
            scale = getattr(self.config, "tie_word_embeddings", True)
        return self.config.d_model ** -0.5 if scale else 1.0

    def _sublayer_path(self, side, layer, kind):
        return f"{side}.block.{layer}.layer.{self._SUBLAYER[(side, kind)]}"

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
        return module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.{self._MODULE[site.kind]}.o")

    def final_norm(self, side):
        return module_at(self.model, f"{side}.final_layer_norm")

    def sublayer_norm(self, site):
        return module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.layer_norm")

    def linearised_norm(self, site, resid_pre, parts):
        # T5's norm is RMSNorm without bias: weight * x / rms(x).
        norm = self.sublayer_norm(site)
        inv_rms = torch.rsqrt(resid_pre.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return norm.weight * (parts * inv_rms.unsqueeze(-2)).to(norm.weight.dtype)

    def mlp_in_weight(self, side, layer):
        ff = module_at(self.model, f"{self._sublayer_path(side, layer, 'mlp')}.DenseReluDense")
        if not hasattr(ff, "wi"):
            raise GenIRError(f"{self.config.name_or_path}: gated MLPs (wi_0/wi_1) are not supported by component reading yet")
        return ff.wi.weight

    def attention_weights(self, site):
        attn = module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.{self._MODULE[site.kind]}")
        return attn.q.weight, attn.k.weight

    def attention_value_weight(self, site):
        return module_at(self.model, f"{self._sublayer_path(site.side, site.layer, site.kind)}.{self._MODULE[site.kind]}.v").weight

    def attention_scaling(self, site):
        # T5 folds the 1/sqrt(d) into its initialisation and does not scale scores.
        return 1.0
