"""The standard component tree: architecture-independent names for model internals.

    Site.parse("decoder.layers.3.cross_attn")          # component output, as added to the residual
    Site.parse("decoder.layers.3.cross_attn.heads")    # per-head outputs before the output projection
    Site.parse("decoder.layers.3.mlp.resid_pre")       # residual stream entering the MLP sublayer
    Site.parse("decoder.layers.3.resid_post")          # residual stream leaving layer 3
    Site.parse("decoder.final_norm"), Site.parse("encoder.output")

This module owns the vocabulary: the sides (SIDES), the sublayer kinds
(KINDS, of which ATTENTION_KINDS have heads) and the facets (FACETS).
Adapters (one per architecture family) say which of them a model has and map
them to modules; analyses and patching only ever speak in these names. A
decoder-only model has the "decoder" side alone, with self_attn and mlp.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import GenIRError
from ..vocabulary import COMPONENT_KINDS

# "decoder" is the stack that produces the ranking logits in every family, so
# analyses of the ranking step run unchanged on encoder-decoder and decoder-only models.
SIDES = ("encoder", "decoder")
KINDS = COMPONENT_KINDS
ATTENTION_KINDS = tuple(k for k in KINDS if k.endswith("_attn"))
# What can be read at a sublayer: the residual before it, the per-head
# pre-projection outputs (attention only), its output, the residual after it.
FACETS = ("resid_pre", "heads", "out", "resid_post")
STACK_FACETS = ("final_norm", "output")  # whole-stack sites (layer -1)

_PATTERN = re.compile(
    rf"^(?P<side>{'|'.join(SIDES)})\.(?:(?:layers\.(?P<layer>\d+)\.(?:(?P<kind>{'|'.join(KINDS)})"
    rf"(?:\.(?P<facet>resid_pre|heads|resid_post))?|(?P<block>resid_pre|resid_post)))|(?P<final>{'|'.join(STACK_FACETS)}))$"
)


@dataclass(frozen=True, order=True)
class Site:
    """One readable/writable point of the standard component tree, named without reference to any architecture.

    Example:
        >>> s = Site.parse("decoder.layers.3.cross_attn.heads")
        >>> s.side, s.layer, s.kind, s.facet
        ('decoder', 3, 'cross_attn', 'heads')
        >>> s.with_facet("out").name
        'decoder.layers.3.cross_attn'
        >>> Site("decoder", 2, "", "resid_post").name       # block level: the residual leaving layer 2
        'decoder.layers.2.resid_post'

    Give sites to `run(gm, batch, reads=[...], writes={site: fn})`; the
    model's adapter (`gm.adapter.hook(site)`) says which module they are.
    """

    side: str
    layer: int = -1  # -1 for whole-stack sites (final_norm / output)
    kind: str = ""  # "" for block-level and whole-stack sites
    facet: str = "out"  # see FACETS; "final_norm" / "output" for whole-stack sites

    @classmethod
    def parse(cls, name: str) -> "Site":
        """A Site from its standard name; GenIRError with examples for a name that is not one."""
        m = _PATTERN.match(name)
        if not m:
            raise GenIRError(
                f"unknown site {name!r}; expected e.g. decoder.layers.3.cross_attn, decoder.layers.3.cross_attn.heads, "
                "decoder.layers.3.resid_post, decoder.final_norm or encoder.output"
            )
        side = m["side"]
        if m["final"]:
            return cls(side, -1, "", m["final"])
        layer = int(m["layer"])
        if m["block"]:
            return cls(side, layer, "", m["block"])
        return cls(side, layer, m["kind"], m["facet"] or "out")

    @property
    def name(self) -> str:
        """The standard name, e.g. decoder.layers.3.cross_attn.heads (parse(name) gives the site back)."""
        if self.layer < 0:
            return f"{self.side}.{self.facet}"
        if not self.kind:
            return f"{self.side}.layers.{self.layer}.{self.facet}"
        suffix = "" if self.facet == "out" else f".{self.facet}"
        return f"{self.side}.layers.{self.layer}.{self.kind}{suffix}"

    def __str__(self) -> str:
        return self.name

    def with_facet(self, facet: str) -> "Site":
        """The same sublayer at another facet (resid_pre, heads, out, resid_post)."""
        return Site(self.side, self.layer, self.kind, facet)
