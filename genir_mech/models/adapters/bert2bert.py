"""BERT2BERT adapter: `EncoderDecoderModel` with a BERT encoder and a BERT decoder (post-LayerNorm, cross-attention added).

    adapter = Bert2BertAdapter(hf_model)
    adapter.hook(Site.parse("decoder.layers.1.cross_attn.heads"))
    -> Hook(path="decoder.bert.encoder.layer.1.crossattention.output.dense", io="input")
    adapter.project(residual)      # the LM head's transform (dense, GELU, LayerNorm), then the decoder matrix and bias

Per decoder layer: self-attention (`attention`), cross-attention
(`crossattention`) and the MLP (`intermediate` + `output`), each followed by
its own LayerNorm; the encoder layers have self-attention and the MLP. BERT
is post-LayerNorm, so "contribution" and the logit lens follow the one
definition in `post_norm.py`: a component's contribution is its output
projection's output (`...output.dense`) before the LayerNorm, `resid_post`
is that LayerNorm's input, and the LayerNorm's effect is `post_norm(site)`.
The unembedding is the whole LM head, `cls.predictions` (its transform is
part of the head, not of the residual stream), so the lens of the last
layer's output equals the logits.
"""
from __future__ import annotations

from ...errors import GenIRError
from .base import module_at, same_across_sides
from .post_norm import PostNormAdapter

_BERT_TYPES = ("bert",)


class Bert2BertAdapter(PostNormAdapter):
    """`EncoderDecoderModel(encoder=BertModel, decoder=BertLMHeadModel)` (e.g. built from a sentence-transformers MiniLM)."""

    family = "bert2bert"
    MODEL_TYPES = ("encoder-decoder",)
    _OUT_PROJ = {"self_attn": "attention.output.dense", "cross_attn": "crossattention.output.dense", "mlp": "output.dense"}
    _POST_NORM = {"self_attn": "attention.output.LayerNorm", "cross_attn": "crossattention.output.LayerNorm", "mlp": "output.LayerNorm"}
    _Q_K_V = {"self_attn": ("attention.self", "query", "key", "value"), "cross_attn": ("crossattention.self", "query", "key", "value")}
    _STACK = {"encoder": "encoder", "decoder": "decoder.bert"}

    @classmethod
    def supports(cls, config):
        return (config.model_type in cls.MODEL_TYPES and getattr(config.encoder, "model_type", None) in _BERT_TYPES
                and getattr(config.decoder, "model_type", None) in _BERT_TYPES)

    def __init__(self, model):
        super().__init__(model)
        if getattr(model, "enc_to_dec_proj", None) is not None:
            raise GenIRError(f"{self.name}: the encoder and decoder widths differ (enc_to_dec_proj); genir_mech needs one residual width")

    def _side_config(self, side):
        return getattr(self.config, side)

    def n_layers(self, side):
        if side not in self.sides:
            raise GenIRError(f"{self.name}: no {side} in a {self.family} model")
        return self._side_config(side).num_hidden_layers

    @property
    def n_heads(self):
        return same_across_sides(self, "attention heads", self.config.encoder.num_attention_heads, self.config.decoder.num_attention_heads)

    @property
    def d_head(self):
        return self.d_model // self.n_heads

    @property
    def d_model(self):
        return same_across_sides(self, "width", self.config.encoder.hidden_size, self.config.decoder.hidden_size)

    def _layer(self, side, layer):
        return f"{self._STACK[side]}.encoder.layer.{layer}"

    def _embedding_norm(self, side):
        return f"{self._STACK[side]}.embeddings.LayerNorm"

    def _activation(self, side, layer):
        return f"{self._layer(side, layer)}.intermediate.intermediate_act_fn"

    def _head_nonlinearities(self):
        return ["decoder.cls.predictions.transform.transform_act_fn", "decoder.cls.predictions.transform.LayerNorm"]

    def _mlp_in(self, side, layer):
        return module_at(self.model, f"{self._layer(side, layer)}.intermediate.dense")

    def unembed(self, normed):
        # BERT's LM head transforms the residual (dense, GELU, LayerNorm) before the output embedding: the lens uses all of it.
        return self.model.decoder.cls.predictions(normed * self.output_scale)
