"""Architecture adapters: where each standard site lives in a HuggingFace model.

    adapter = adapter_for(hf_model)            # T5Adapter for T5/mT5
    adapter.hook(Site.parse("decoder.layers.2.cross_attn"))
    -> Hook(path="decoder.block.2.layer.1.EncDecAttention", io="output", index=0)

An adapter is the one place that knows an architecture family's module names,
its counts (read from the config, never constants), its final norm and its
output scaling. A new family (BART, BERT2BERT) is a new `Adapter` subclass
registered in `ADAPTERS`; nothing else in genir_mech changes.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import GenIRError
from .components import ATTENTION_KINDS, FACETS, SIDES, Site


@dataclass(frozen=True)
class Hook:
    """A physical read/write point: a module path, its input or output, and the tuple index."""

    path: str
    io: str  # "input" or "output"
    index: int | None = None


def module_at(root, path: str):
    """Resolve 'decoder.block.2.layer.1' on a torch module or an nnsight envoy alike."""
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


class Adapter(ABC):
    family: str = ""

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    @classmethod
    @abstractmethod
    def supports(cls, model: nn.Module) -> bool: ...

    # -- shape, from the config ---------------------------------------------------------------
    @abstractmethod
    def n_layers(self, side: str) -> int: ...

    @property
    @abstractmethod
    def n_heads(self) -> int: ...

    @property
    @abstractmethod
    def d_head(self) -> int: ...

    @property
    @abstractmethod
    def d_model(self) -> int: ...

    def kinds(self, side: str) -> tuple[str, ...]:
        return ("self_attn", "cross_attn", "mlp") if side == "decoder" else ("self_attn", "mlp")

    # -- where things are -----------------------------------------------------------------------
    @abstractmethod
    def hook(self, site: Site) -> Hook: ...

    @abstractmethod
    def output_projection(self, site: Site) -> nn.Linear:
        """The linear layer that maps concatenated heads to the residual stream."""

    @abstractmethod
    def final_norm(self, side: str) -> nn.Module: ...

    @abstractmethod
    def sublayer_norm(self, site: Site) -> nn.Module:
        """The norm applied to the residual before this sublayer reads it."""

    @abstractmethod
    def mlp_in_weight(self, side: str, layer: int) -> torch.Tensor:
        """(d_ff, d_model) input weight of the MLP (rows are neurons)."""

    @abstractmethod
    def attention_weights(self, site: Site) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_Q, W_K) as (H*d_head, d_model) matrices."""

    def attention_value_weight(self, site: Site) -> torch.Tensor:
        """W_V as an (H*d_head, d_model) matrix; with `attention_weights` it lets attribution recompute an attention exactly."""
        raise GenIRError(f"{self.config.name_or_path}: attention value weights are not exposed by the {self.family} adapter")

    def attention_scaling(self, site: Site) -> float:
        """Factor on the query-key dot product before the softmax (1/sqrt(d_head) unless the family says otherwise)."""
        return self.d_head**-0.5

    def linearised_norm(self, site: Site, resid_pre: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """The sublayer norm with its statistics frozen at `resid_pre` (..., d), applied to `parts` (..., S, d).

        Frozen, the norm is linear: the normed residual is the sum of the normed
        parts that wrote it, which is how component reading attributes what a
        sublayer reads to earlier components.
        """
        raise GenIRError(f"{self.config.name_or_path}: linearised sublayer norms are not implemented for the {self.family} adapter")

    @property
    @abstractmethod
    def output_scale(self) -> float:
        """Factor applied to the final-normed residual before the unembedding."""

    # -- derived --------------------------------------------------------------------------------
    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        return self.model.get_output_embeddings()(normed * self.output_scale)

    def project(self, residual: torch.Tensor) -> torch.Tensor:
        """Logit lens: the model's own final norm, scaling and unembedding applied to a residual."""
        return self.unembed(self.final_norm("decoder")(residual))

    def components(self, side: str = "decoder", kinds: tuple[str, ...] | None = None) -> list[Site]:
        return [Site(side, layer, kind) for layer in range(self.n_layers(side)) for kind in self.kinds(side) if kinds is None or kind in kinds]

    def order_key(self, site: Site) -> tuple:
        side_rank = SIDES.index(site.side)
        if site.layer < 0:
            return (side_rank, self.n_layers(site.side), 0, 0)
        if not site.kind:  # block-level residual: first sublayer's input or last sublayer's output
            kinds = self.kinds(site.side)
            return (side_rank, site.layer, 0 if site.facet == "resid_pre" else len(kinds) - 1, FACETS.index(site.facet))
        return (side_rank, site.layer, self.kinds(site.side).index(site.kind), FACETS.index(site.facet))

    def validate(self, site: Site) -> Site:
        n = self.n_layers(site.side)
        if site.layer >= n:
            raise GenIRError(f"{site.name}: the {site.side} has {n} layers (0..{n - 1})")
        if site.kind and site.kind not in self.kinds(site.side):
            raise GenIRError(f"{site.name}: the {site.side} has no {site.kind}")
        if site.facet == "heads" and site.kind not in ATTENTION_KINDS:
            raise GenIRError(f"{site.name}: only attention sublayers have heads")
        return site

    def head_contributions(self, site: Site, heads_input: torch.Tensor) -> torch.Tensor:
        """(..., H*d_head) pre-projection head outputs -> (..., H, d_model) per-head residual contributions.

        The output projection is linear without bias in T5, so these sum over
        heads to the sublayer output; a bias (BART) is left out of every head.
        """
        weight = self.output_projection(site).weight  # (d_model, H*d_head)
        h, d = self.n_heads, self.d_head
        split = heads_input.reshape(*heads_input.shape[:-1], h, d)
        return torch.einsum("...hd,mhd->...hm", split, weight.reshape(weight.shape[0], h, d))


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


ADAPTERS: list[type[Adapter]] = [T5Adapter]


def adapter_for(model: nn.Module) -> Adapter:
    name = getattr(model.config, "name_or_path", "") or type(model).__name__
    if not getattr(model.config, "is_encoder_decoder", False):
        raise GenIRError(
            f"{name}: {type(model).__name__} is not an encoder-decoder model (config.is_encoder_decoder is false); "
            "genir_mech analyses seq2seq GenIR models with an encoder and a cross-attending decoder"
        )
    for cls in ADAPTERS:
        if cls.supports(model):
            return cls(model)
    raise GenIRError(
        f"{name}: no genir_mech adapter for model_type {model.config.model_type!r} ({type(model).__name__}); "
        f"supported families: {', '.join(c.family for c in ADAPTERS)}"
    )
