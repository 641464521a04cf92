"""Patch specifications: a sweep is data, a list of `PatchSpec`s that can be saved, diffed and rerun.

    specs = target_specs(gm, "head")                       # every decoder attention head
    save_specs(specs, "runs/my_sweep.json"); specs = load_specs("runs/my_sweep.json")
    PatchSpec("decoder.layers.3.cross_attn.heads", head=2) # one head's d_head slice
    PatchSpec("encoder.output", position=4)                # one encoder token position

A spec names a standard site (genir_mech.models.components), optionally one
head of a `.heads` site and optionally one sequence position (encoder token
position for encoder sites, decoder position for decoder sites). The engine
replaces exactly that slice with the source run's activation.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import GenIRError
from ..models.components import ATTENTION_KINDS, Site

TARGETS = ("resid", "component", "head", "encoder-position", "encoder-layer-position")


@dataclass(frozen=True)
class PatchSpec:
    site: str
    head: int | None = None
    position: int | None = None

    @property
    def parsed(self) -> Site:
        return Site.parse(self.site)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "PatchSpec":
        unknown = set(data) - {"site", "head", "position"}
        if "site" not in data or unknown:
            raise GenIRError(f"{where}: a patch spec needs 'site' and may have 'head' and 'position'; got keys {sorted(data)}")
        for key in ("head", "position"):
            if data.get(key) is not None and not isinstance(data[key], int):
                raise GenIRError(f"{where}: {key} must be an integer, got {data[key]!r}")
        return cls(str(data["site"]), data.get("head"), data.get("position"))

    def axes(self) -> dict:
        """The named axes of this patch in result tables: side, layer, component, head, position."""
        site = self.parsed
        component = site.kind or site.facet  # block-level sites are named by facet (resid_post), whole-stack ones by theirs (output)
        if site.kind and site.facet not in ("out", "heads"):
            component = f"{site.kind}.{site.facet}"
        return {
            "site": self.site,
            "side": site.side,
            "layer": site.layer if site.layer >= 0 else None,
            "component": component,
            "head": self.head,
            "position": self.position,
        }

    def __str__(self) -> str:
        extra = "".join(f"[{k}={v}]" for k, v in (("head", self.head), ("position", self.position)) if v is not None)
        return f"{self.site}{extra}"


def validate_specs(gm, specs: list[PatchSpec]) -> list[PatchSpec]:
    """Check every spec against the model's shape; raises GenIRError naming the spec."""
    adapter = gm.adapter
    for i, spec in enumerate(specs):
        where = f"patch spec {i} ({spec})"
        try:
            site = adapter.validate(spec.parsed)
        except GenIRError as exc:
            raise GenIRError(f"{where}: {exc}") from None
        if site.facet == "final_norm":
            raise GenIRError(f"{where}: the final norm is not a patch target; patch the last layer's resid_post instead")
        if spec.head is not None:
            if site.facet != "heads":
                raise GenIRError(f"{where}: a head can only be given for a .heads site (e.g. decoder.layers.0.cross_attn.heads)")
            if not 0 <= spec.head < adapter.n_heads:
                raise GenIRError(f"{where}: head {spec.head} out of range; the model has {adapter.n_heads} heads")
        if spec.position is not None and spec.position < 0:
            raise GenIRError(f"{where}: position must be >= 0, got {spec.position}")
    return specs


def target_specs(gm, target: str, *, encoder_positions: int = 0, decoder_positions: int = 1, kinds: tuple[str, ...] | None = None) -> list[PatchSpec]:
    """The standard sweeps, read off the model's shape (never hard-coded counts).

    resid: the decoder residual after each layer, per decoder position.
    component: every decoder sublayer output (self_attn, cross_attn, mlp by default).
    head: every attention head of the decoder (cross and self attention by default).
    encoder-position: the encoder output at each of `encoder_positions` positions.
    encoder-layer-position: each encoder layer's output at each position.
    """
    adapter = gm.adapter
    n_dec = adapter.n_layers("decoder")
    if target == "resid":
        return [PatchSpec(f"decoder.layers.{layer}.resid_post", position=p) for layer in range(n_dec) for p in range(decoder_positions)]
    if target == "component":
        return [PatchSpec(site.name) for site in adapter.components("decoder", kinds)]
    if target == "head":
        attention = tuple(k for k in (kinds or adapter.kinds("decoder")) if k in ATTENTION_KINDS)
        return [
            PatchSpec(site.with_facet("heads").name, head=h)
            for site in adapter.components("decoder", attention)
            for h in range(adapter.n_heads)
        ]
    if target == "encoder-position":
        return [PatchSpec("encoder.output", position=p) for p in range(encoder_positions)]
    if target == "encoder-layer-position":
        return [
            PatchSpec(f"encoder.layers.{layer}.resid_post", position=p)
            for layer in range(adapter.n_layers("encoder"))
            for p in range(encoder_positions)
        ]
    raise GenIRError(f"unknown patch target {target!r}; choose one of {', '.join(TARGETS)}")


def save_specs(specs: list[PatchSpec], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([s.to_dict() for s in specs], indent=1))
    return path


def load_specs(path: str | Path) -> list[PatchSpec]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise GenIRError(f"{path}: cannot read the sweep ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise GenIRError(f"{path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise GenIRError(f"{path}: a sweep file is a JSON list of patch specs")
    return [PatchSpec.from_dict(item if isinstance(item, dict) else {}, f"{path}, spec {i}") for i, item in enumerate(data)]
