"""BART-family adapter (BART, GENRE-style GenIR models): encoder-decoder, post-LayerNorm, biased projections, learned positions.

    adapter = BartAdapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))
    -> Hook(path="model.decoder.layers.2.encoder_attn.out_proj", io="output")
    adapter.post_norm(Site.parse("decoder.layers.2.cross_attn"))   # model.decoder.layers.2.encoder_attn_layer_norm

BART is post-LayerNorm: each sublayer's output is added to the residual and
the sum is normalised (self_attn_layer_norm, encoder_attn_layer_norm,
final_layer_norm). What "contribution" and the logit lens mean then is
defined once for every post-LN family in `post_norm.py`: a component's
contribution is its output before the LayerNorm, `resid_post` is the
LayerNorm's input, the LayerNorm's effect is `post_norm(site)`, and the lens
is the LM head plus `final_logits_bias` (no final norm), so the lens of the
last layer's output equals the logits. The output projections carry a bias,
which belongs to no head.
"""
from __future__ import annotations

from ...errors import GenIRError
from .base import module_at, same_across_sides
from .post_norm import PostNormAdapter


class BartAdapter(PostNormAdapter):
    """`BartForConditionalGeneration` models (post-LayerNorm, no final norm, `final_logits_bias`)."""

    family = "bart"
    MODEL_TYPES = ("bart",)
    _OUT_PROJ = {"self_attn": "self_attn.out_proj", "cross_attn": "encoder_attn.out_proj", "mlp": "fc2"}
    _POST_NORM = {"self_attn": "self_attn_layer_norm", "cross_attn": "encoder_attn_layer_norm", "mlp": "final_layer_norm"}
    _Q_K_V = {"self_attn": ("self_attn", "q_proj", "k_proj", "v_proj"), "cross_attn": ("encoder_attn", "q_proj", "k_proj", "v_proj")}

    def __init__(self, model):
        super().__init__(model)
        if getattr(self.config, "add_final_layer_norm", False) or getattr(self.config, "normalize_before", False):
            raise GenIRError(f"{self.name}: a pre-norm BART variant (normalize_before / add_final_layer_norm) is not the post-LayerNorm layout this adapter maps")

    def n_layers(self, side):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: no {side} in a {self.family} model")
        return self.config.encoder_layers if side == "encoder" else self.config.decoder_layers

    @property
    def n_heads(self):
        return same_across_sides(self, "attention heads", self.config.encoder_attention_heads, self.config.decoder_attention_heads)

    @property
    def d_head(self):
        return self.d_model // self.n_heads

    @property
    def d_model(self):
        return self.config.d_model

    def _layer(self, side, layer):
        return f"model.{side}.layers.{layer}"

    def _embedding_norm(self, side):
        return f"model.{side}.layernorm_embedding"

    def _activation(self, side, layer):
        return f"{self._layer(side, layer)}.activation_fn"

    def _mlp_in(self, side, layer):
        return module_at(self.model, f"{self._layer(side, layer)}.fc1")

    def unembed(self, normed):
        # BART adds a per-token bias after the LM head (zero in released checkpoints, but kept exact).
        return self.model.lm_head(normed * self.output_scale) + self.model.final_logits_bias
