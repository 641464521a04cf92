"""The adapter contract: what genir_mech needs to know about an architecture family.

    class MyAdapter(Adapter): family = "my"; ...     # one module per family under models/adapters/
    module_at(model, "decoder.block.2.layer.1")      # resolve a dotted module path (torch module or nnsight envoy)
    rms_linearised(norm, resid_pre, parts)           # an RMSNorm with its statistics frozen (shared by families)

An adapter is the one place that knows a family's module names, its sides
and sublayer kinds, its counts (read from the config, never constants), the
HuggingFace class that loads it, how its inputs are built, its final norm,
its output scaling, its attention recipe and its norm linearisation.
"""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import GenIRError
from ..components import ATTENTION_KINDS, FACETS, KINDS, SIDES, Site
from .attention import Attention


@dataclass(frozen=True)
class Hook:
    """A physical read/write point: a module path, its input or output, and the tuple index.

    Example:
        >>> T5Adapter(model).hook(Site.parse("decoder.layers.2.cross_attn"))
        Hook(path='decoder.block.2.layer.1.EncDecAttention', io='output', index=0, writable=True)
        >>> LlamaAdapter(model).hook(Site.parse("decoder.layers.0.mlp.resid_pre"))
        Hook(path='model.layers.0.post_attention_layernorm', io='input', index=None, writable=False)

    `writable=False` marks a point that reads the right tensor but where a
    write would not reach the residual stream (a norm's input whose caller
    keeps its own reference to the residual); `run` refuses writes there.
    """

    path: str
    io: str  # "input" or "output"
    index: int | None = None
    writable: bool = True


def module_at(root, path: str):
    """Resolve 'decoder.block.2.layer.1' on a torch module or an nnsight envoy alike."""
    node = root
    for part in path.split("."):
        if part.isdigit():
            node = node[int(part)]
            continue
        # nnsight serves `.output`/`.input` on every envoy, so a submodule of that name
        # (BERT's `attention.output`) is mounted under its OVERLOAD_PREFIX ("E_output").
        prefix = getattr(type(node), "OVERLOAD_PREFIX", None)
        if prefix and inspect.isdatadescriptor(getattr(type(node), part, None)):
            part = prefix + part
        node = getattr(node, part)
    return node


def rms_linearised(norm: nn.Module, resid_pre: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """RMSNorm (weight * x / rms(x), no bias: T5, Llama) with rms frozen at `resid_pre` (..., d), applied to `parts` (..., S, d)."""
    inv_rms = torch.rsqrt(resid_pre.float().pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * (parts * inv_rms.unsqueeze(-2)).to(norm.weight.dtype)


def same_across_sides(adapter: Adapter, what: str, encoder_value, decoder_value):
    """One value for both sides, or a GenIRError naming the model (genir_mech counts heads and width once per model)."""
    if encoder_value != decoder_value:
        raise GenIRError(f"{adapter.name}: the encoder has {what} {encoder_value} but the decoder {decoder_value}; genir_mech needs them equal")
    return decoder_value


class Adapter(ABC):
    """What genir_mech knows about one architecture family; `gm.adapter` of every loaded model.

    Example:
        >>> gm = tiny_genir()                                   # or load_genir(path)
        >>> gm.adapter.sides, gm.adapter.kinds("decoder")
        (('encoder', 'decoder'), ('self_attn', 'cross_attn', 'mlp'))
        >>> gm.adapter.hook(Site.parse("decoder.layers.1.mlp")).path
        'decoder.block.1.layer.2.DenseReluDense'
        >>> gm.adapter.require("cross_attn", "component reading")   # GenIRError on a decoder-only model

    A new family subclasses this in `models/adapters/<family>.py` and fills
    in: `MODEL_TYPES`, `sides`, `SUBLAYERS`, `auto_class`, `padding_side`,
    `query_reading_kind`, the counts (`n_layers`, `n_heads`, `n_kv_heads`,
    `d_head`, `d_model`), `hook`, `output_projection`, `final_norm`,
    `sublayer_norm`, `mlp_in_weight`, `attention` (the recompute),
    `linearised_norm`, `linearisable_modules`, `model_inputs`, `output_scale`.
    The contract test (tests/test_adapter_contract.py) checks them against the
    model's own forward pass.
    """

    family: str = ""
    MODEL_TYPES: tuple[str, ...] = ()  # HuggingFace config.model_type values of this family
    sides: tuple[str, ...] = SIDES
    SUBLAYERS: dict[str, tuple[str, ...]] = {}  # side -> sublayer kinds in forward order (a subset of components.KINDS)
    auto_class: type = None  # the transformers Auto class that loads a checkpoint of this family
    padding_side: str = "right"  # decoder-only models pad on the left so the last position is the ranking step
    query_reading_kind: str = "cross_attn"  # the attention whose queries read the query text at the ranking step

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config
        unknown = {k for kinds in self.SUBLAYERS.values() for k in kinds} - set(KINDS)
        if unknown or set(self.SUBLAYERS) != set(self.sides):
            raise GenIRError(f"the {self.family} adapter declares sublayers {self.SUBLAYERS} for sides {self.sides}; kinds must come from {KINDS}")

    @classmethod
    def supports(cls, config) -> bool:
        """True when a HuggingFace config belongs to this family: its model_type and whether it has an encoder."""
        return config.model_type in cls.MODEL_TYPES and bool(getattr(config, "is_encoder_decoder", False)) == ("encoder" in cls.sides)

    @property
    def name(self) -> str:
        """The model's name or path, for error messages."""
        return getattr(self.config, "name_or_path", "") or type(self.model).__name__

    # -- shape, from the config ---------------------------------------------------------------
    @abstractmethod
    def n_layers(self, side: str) -> int: ...

    @property
    @abstractmethod
    def n_heads(self) -> int: ...

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads (fewer than `n_heads` under grouped-query attention)."""
        return self.n_heads

    @property
    @abstractmethod
    def d_head(self) -> int: ...

    @property
    @abstractmethod
    def d_model(self) -> int: ...

    def kinds(self, side: str) -> tuple[str, ...]:
        """Sublayer kinds of `side` in forward order (empty for a side the model lacks)."""
        return self.SUBLAYERS.get(side, ())

    def has(self, part: str) -> bool:
        """Whether the model has a side ("encoder") or a sublayer kind ("cross_attn") anywhere."""
        return part in self.sides or any(part in kinds for kinds in self.SUBLAYERS.values())

    def require(self, *parts: str, analysis: str) -> None:
        """Refuse, with one clear error, an analysis that needs parts the model lacks (e.g. require("encoder", "cross_attn", analysis="the encoder swap"))."""
        missing = [p for p in parts if not self.has(p)]
        if missing:
            layout = "; ".join(f"{side}: {', '.join(self.kinds(side))}" for side in self.sides)
            raise GenIRError(
                f"{self.name}: {analysis} needs {' and '.join(missing)}, but this {self.family} model has none "
                f"(its sides and sublayers are {layout})"
            )

    # -- inputs ---------------------------------------------------------------------------------
    @abstractmethod
    def model_inputs(self, batch) -> dict:
        """Keyword arguments of the HuggingFace forward pass that ranks `batch` (a QueryBatch) at its last position."""

    def start_ids(self, n: int) -> torch.Tensor:
        """(n, 1) decoder inputs of the ranking step of an encoder-decoder model."""
        raise GenIRError(f"{self.name}: a {self.family} model has no decoder start token; its ranking step is the last query position")

    def encode(self, batch):
        """The batch with its encoder output cached (`encoder_hidden`); unchanged for a model without an encoder."""
        return batch

    # -- where things are -----------------------------------------------------------------------
    @abstractmethod
    def hook(self, site: Site) -> Hook:
        """Where a standard site lives in this family's modules (GenIRError for a site the model does not have)."""

    @abstractmethod
    def output_projection(self, site: Site) -> nn.Linear:
        """The linear layer that maps concatenated heads to the residual stream."""

    def output_weight(self, site: Site) -> torch.Tensor:
        """(d_model, H*d_head) weight of the output projection (nn.Linear layout; Conv1D families transpose theirs)."""
        return self.output_projection(site).weight

    @abstractmethod
    def final_norm(self, side: str) -> nn.Module:
        """The norm applied to the last residual of a side before the unembedding."""

    @abstractmethod
    def sublayer_norm(self, site: Site) -> nn.Module:
        """The norm applied to the residual before this sublayer reads it."""

    @abstractmethod
    def mlp_in_weight(self, side: str, layer: int) -> torch.Tensor:
        """(d_ff, d_model) linear input weight of the MLP (rows are neurons); of a gated MLP, the projection the gate multiplies."""

    def mlp_gate(self, side: str, layer: int) -> tuple[torch.Tensor, nn.Module] | None:
        """(gate weight (d_ff, d_model), activation) of a gated MLP, act(gate . x) * (in . x); None for an ungated MLP."""
        return None

    @abstractmethod
    def attention(self, site: Site, batch) -> Attention:
        """This attention sublayer recomputed from its weights, with the masks, bias and rotation of `batch` (a QueryBatch)."""

    def attention_weights(self, site: Site) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_Q, W_K) as (H*d_head, d_model) and (H_kv*d_head, d_model) matrices."""
        attn = self.attention(site, None)
        return attn.w_q, attn.w_k

    def attention_value_weight(self, site: Site) -> torch.Tensor:
        """W_V as an (H_kv*d_head, d_model) matrix."""
        return self.attention(site, None).w_v

    def post_norm(self, site: Site) -> nn.Module | None:
        """The LayerNorm a post-LayerNorm family (BART, BERT) applies to this sublayer's resid_post; None in pre-norm families.

        See models/adapters/post_norm.py for what a contribution and the lens mean then.
        """
        return None

    @abstractmethod
    def linearised_norm(self, site: Site, resid_pre: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
        """The sublayer norm with its statistics frozen at `resid_pre` (..., d), applied to `parts` (..., S, d).

        Frozen, the norm is linear: the normed residual is the sum of the normed
        parts that wrote it, which is how component reading attributes what a
        sublayer reads to earlier components.
        """

    @abstractmethod
    def linearisable_modules(self) -> list[str]:
        """Paths of every norm and MLP nonlinearity; replaced by identities they leave the model affine except for attention."""

    @property
    @abstractmethod
    def output_scale(self) -> float:
        """Factor applied to the final-normed residual before the unembedding."""

    # -- resuming a forward pass from a layer --------------------------------------------------------
    def block_path(self, side: str, layer: int) -> str | None:
        """Module path of layer `layer` of `side` (the whole block: sublayers and residual adds); None when
        this family cannot resume a forward pass from a layer (the executor then runs every layer)."""
        return None

    @property
    def block_output_is_resid_post(self) -> bool:
        """Whether what block L returns (its residual, first when a tuple) is the value of the site `resid_post` of layer L,
        so that a write there can be applied to the cached block output and the rows resume at layer L + 1."""
        return False

    def cross_keys_values(self, encoder_hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Per decoder layer, the cross-attention (keys, values) of `encoder_hidden`, for `model_inputs` to hand on when a
        batch carries them (`QueryBatch.cross_keys_values`); None: this family projects them in every pass."""
        return None

    def resumed_block_output(self, output, rows: torch.Tensor):
        """A block output read on the base batch, made the output for fanned-out `rows` (indices into that batch).

        The default fits blocks that return the residual alone or a tuple with
        the residual first and batch-independent extras after it (T5's shared
        position biases, shape (1, H, T, K)): only the residual is per row.
        """
        if isinstance(output, torch.Tensor):
            return output.index_select(0, rows.to(output.device))
        return (output[0].index_select(0, rows.to(output[0].device)), *output[1:])

    # -- derived --------------------------------------------------------------------------------
    def unembed(self, normed: torch.Tensor) -> torch.Tensor:
        """Logits of already final-normed vectors: output scaling, then the output embedding."""
        return self.model.get_output_embeddings()(normed * self.output_scale)

    def project(self, residual: torch.Tensor) -> torch.Tensor:
        """Logit lens: the model's own final norm, scaling and unembedding applied to a residual."""
        return self.unembed(self.final_norm("decoder")(residual))

    def components(self, side: str = "decoder", kinds: tuple[str, ...] | None = None) -> list[Site]:
        """Every component output site of a side, in forward order (optionally only some kinds)."""
        return [Site(side, layer, kind) for layer in range(self.n_layers(side)) for kind in self.kinds(side) if kinds is None or kind in kinds]

    def order_key(self, site: Site) -> tuple:
        """Sort key of `site` in forward order (nnsight requires sites to be visited in that order)."""
        self.validate(site)
        side_rank = SIDES.index(site.side)
        if site.layer < 0:
            return (side_rank, self.n_layers(site.side), 0, 0)
        if not site.kind:  # block-level residual: first sublayer's input or last sublayer's output
            kinds = self.kinds(site.side)
            return (side_rank, site.layer, 0 if site.facet == "resid_pre" else len(kinds) - 1, FACETS.index(site.facet))
        return (side_rank, site.layer, self.kinds(site.side).index(site.kind), FACETS.index(site.facet))

    def validate(self, site: Site) -> Site:
        """Return `site` if this model has it, else raise GenIRError naming the site and the model's range."""
        if site.side not in self.sides:
            raise GenIRError(f"{site.name}: this {self.family} model has no {site.side} (its sides: {', '.join(self.sides)})")
        n = self.n_layers(site.side)
        if site.layer >= n:
            raise GenIRError(f"{site.name}: the {site.side} has {n} layers (0..{n - 1})")
        if site.kind and site.kind not in self.kinds(site.side):
            raise GenIRError(f"{site.name}: the {site.side} has no {site.kind} (it has {', '.join(self.kinds(site.side))})")
        if site.facet == "heads" and site.kind not in ATTENTION_KINDS:
            raise GenIRError(f"{site.name}: only attention sublayers have heads")
        return site

    def head_contributions(self, site: Site, heads_input: torch.Tensor) -> torch.Tensor:
        """(..., H*d_head) pre-projection head outputs -> (..., H, d_model) per-head residual contributions.

        They sum over heads to the sublayer output when the output projection
        has no bias (T5, Llama, Qwen2); a bias (BART) is left out of every head.
        """
        weight = self.output_weight(site)  # (d_model, H*d_head)
        h, d = self.n_heads, self.d_head
        split = heads_input.reshape(*heads_input.shape[:-1], h, d)
        return torch.einsum("...hd,mhd->...hm", split, weight.reshape(weight.shape[0], h, d))
