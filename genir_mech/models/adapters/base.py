"""The adapter contract: what genir_mech needs to know about an architecture family.

    class MyAdapter(Adapter): family = "my"; ...     # one module per family under models/adapters/
    module_at(model, "decoder.block.2.layer.1")      # resolve a dotted module path (torch module or nnsight envoy)

An adapter is the one place that knows a family's module names, its counts
(read from the config, never constants), its final norm, its output scaling,
its attention recipe and its norm linearisation.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import GenIRError
from ..components import ATTENTION_KINDS, FACETS, SIDES, Site


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


