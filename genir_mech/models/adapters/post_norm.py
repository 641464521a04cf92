"""Shared layout of post-LayerNorm encoder-decoders (BART, BERT2BERT), and the definition of a contribution there.

    class BartAdapter(PostNormAdapter): ...      # a family names its layer paths, output projections and LayerNorms
    adapter.post_norm(Site("decoder", 2, "cross_attn"))   # the LayerNorm after the cross-attention's addition

In a post-LayerNorm model each sublayer adds its output to the residual and
the sum is then normalised: x_next = LN(x + f(x)). genir_mech's definition
(one for every post-LN family):

- a component's contribution (`out`) is its output as added to the residual,
  before the LayerNorm: the same vector a pre-norm model adds;
- `resid_pre` of a sublayer is what it reads (the normalised stream); its
  `resid_post` is the sum resid_pre + out *before* the LayerNorm (the
  LayerNorm's input), so resid_post = resid_pre + out holds exactly;
- the LayerNorm's effect is reported separately: `adapter.post_norm(site)` is
  that LayerNorm, the next sublayer's `resid_pre` and the block's
  `resid_post` are its output (the block's resid_post is the layer output,
  which HuggingFace records as the next hidden state);
- the logit lens (`project`) is the LM head alone (`final_norm` is the
  identity: these models normalise inside the last layer and have no final
  norm), so lens(block resid_post of the last layer) == the logits exactly
  (the load-time self-check). A residual is read through the LayerNorm that
  follows it: the logit-lens analysis projects post_norm(resid_post) for
  every sublayer's resid_post, so its last probe is the model's own
  ranking; component outputs and heads are projected unnormalised.

Per-head outputs (the output projection's input, split by head) sum to the
sublayer output minus the output projection's bias, which belongs to no head
(see `Adapter.head_contributions`). Component reading (which needs the
residual to be a plain sum of earlier outputs) is refused: the chain of
LayerNorms between components is not linearised here.
"""
from __future__ import annotations

from abc import abstractmethod

from torch import nn
from transformers import AutoModelForSeq2SeqLM

from ...errors import GenIRError
from ..components import FACETS, Site
from .attention import Attention
from .base import Adapter, Hook, module_at
from .t5 import T5Adapter


class PostNormAdapter(Adapter):
    """An encoder-decoder whose sublayers are each followed by a LayerNorm; subclasses name the modules.

    Subclasses set `_OUT_PROJ` and `_POST_NORM` (sublayer kind -> path
    relative to the layer), `_Q_K_V` (kind -> attention module path and the
    names of its query, key and value linears) and implement `_layer`,
    `_embedding_norm`, `_activation` and `_mlp_in`.
    """

    _OUT_PROJ: dict[str, str] = {}
    _POST_NORM: dict[str, str] = {}
    _Q_K_V: dict[str, tuple[str, str, str, str]] = {}
    sides = ("encoder", "decoder")
    SUBLAYERS = {"encoder": ("self_attn", "mlp"), "decoder": ("self_attn", "cross_attn", "mlp")}
    auto_class = AutoModelForSeq2SeqLM
    padding_side = "right"
    query_reading_kind = "cross_attn"
    # The encoder-decoder forward signature (input_ids or encoder_outputs, attention_mask,
    # decoder_input_ids from the start token) is the one T5 uses; one place builds it.
    start_ids = T5Adapter.start_ids
    model_inputs = T5Adapter.model_inputs
    encode = T5Adapter.encode

    @abstractmethod
    def _layer(self, side: str, layer: int) -> str:
        """Path (or module) named by the family subclass."""

    def _path(self, site: Site, table: dict[str, str]) -> str:
        return f"{self._layer(site.side, site.layer)}.{table[site.kind]}"

    # -- where things are -----------------------------------------------------------------------
    def hook(self, site):
        self.validate(site)
        kinds = self.kinds(site.side)
        if site.layer < 0:  # no final norm: the stack's output is the last layer's last LayerNorm output
            return Hook(self._path(Site(site.side, self.n_layers(site.side) - 1, kinds[-1]), self._POST_NORM), "output")
        if not site.kind:
            if site.facet == "resid_pre":
                return Hook(self._layer(site.side, site.layer), "input")
            return Hook(self._path(Site(site.side, site.layer, kinds[-1]), self._POST_NORM), "output")
        if site.facet == "resid_pre":
            index = kinds.index(site.kind)
            if index == 0:
                return Hook(self._layer(site.side, site.layer), "input")
            return Hook(self._path(Site(site.side, site.layer, kinds[index - 1]), self._POST_NORM), "output")
        if site.facet == "resid_post":
            return Hook(self._path(site, self._POST_NORM), "input")
        return Hook(self._path(site, self._OUT_PROJ), "input" if site.facet == "heads" else "output")

    def order_key(self, site):
        key = super().order_key(site)
        if site.layer >= 0 and not site.kind and site.facet == "resid_post":
            # The block's resid_post is the last LayerNorm's output, after that sublayer's own resid_post (its input).
            return (*key[:3], len(FACETS))
        return key

    def output_projection(self, site):
        self.validate(site)
        return module_at(self.model, self._path(site, self._OUT_PROJ))

    def post_norm(self, site):
        self.validate(site)
        return module_at(self.model, self._path(site, self._POST_NORM))

    def final_norm(self, side):
        return nn.Identity()

    def sublayer_norm(self, site):
        return nn.Identity()  # a post-LN sublayer reads the (already normalised) stream as it is

    def linearised_norm(self, site, resid_pre, parts):
        raise GenIRError(
            f"{self.name}: component reading needs the residual a sublayer reads to be the sum of earlier outputs; in a post-LayerNorm "
            f"{self.family} model a LayerNorm lies between every two components, and genir_mech does not linearise that chain"
        )

    @property
    def output_scale(self):
        return 1.0

    def mlp_in_weight(self, side, layer):
        return self._mlp_in(side, layer).weight

    def attention(self, site, batch):
        self.validate(site)
        path, q, k, v = self._Q_K_V[site.kind]
        attn = module_at(self.model, f"{self._layer(site.side, site.layer)}.{path}")
        q, k, v = getattr(attn, q), getattr(attn, k), getattr(attn, v)
        cross = site.kind == "cross_attn"
        key_mask = batch.attention_mask if batch is not None and (cross or site.side == "encoder") else None
        return Attention(
            w_q=q.weight, w_k=k.weight, w_v=v.weight, b_q=q.bias, b_k=k.bias, b_v=v.bias, n_heads=self.n_heads, d_head=self.d_head,
            norm=nn.Identity(), scale=attn.scaling, keys_from_residual=not cross, key_mask=key_mask, causal=site.side == "decoder" and not cross,
        )

    def linearisable_modules(self):
        paths = [self._embedding_norm(side) for side in self.sides]
        for side in self.sides:
            for layer in range(self.n_layers(side)):
                paths += [self._path(Site(side, layer, kind), self._POST_NORM) for kind in self.kinds(side)]
                paths.append(self._activation(side, layer))
        return paths + self._head_nonlinearities()

    def _head_nonlinearities(self) -> list[str]:
        """Paths of norms and activations inside the LM head (none unless the head has a transform)."""
        return []

    @abstractmethod
    def _embedding_norm(self, side: str) -> str:
        """Path (or module) named by the family subclass."""

    @abstractmethod
    def _activation(self, side: str, layer: int) -> str:
        """Path (or module) named by the family subclass."""

    @abstractmethod
    def _mlp_in(self, side: str, layer: int) -> nn.Linear:
        """Path (or module) named by the family subclass."""

