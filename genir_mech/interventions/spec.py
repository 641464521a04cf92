"""Intervention specs: what to overwrite (a site, optionally one head and one position) and with what value; labelled groups of them.

    InterventionSpec("decoder.layers.3.cross_attn.heads", head=2)               # patch one head with the source run
    InterventionSpec("decoder.layers.5.mlp", value="mean")                      # mean-ablate a component
    group = Intervention.of([Site("decoder", l, "mlp") for l in range(3)], "zero", stage="priming", component="mlp", method="zero")
    group.sites, group.replace                                                  # [Site...], ((Site, "zero"), ...)
    validate_interventions(gm, [group])                                         # layers/heads checked against the model

A spec names a standard site (genir_mech.models.components), optionally one
head of a `.heads` site and optionally one sequence position (encoder token
for encoder sites, decoder position for decoder sites); the executor replaces
exactly that slice. Values: `source`, the same slice of a source run (clean
into corrupted patching, or the reverse); `zero`; `mean`, its mean over
reference queries; `other-model`, the same site of another checkpoint on the
same query. An `Intervention` is a group of specs applied together in one
run, with labels that become the columns of result tables.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from ..errors import GenIRError
from ..models.components import Site

VALUES = ("source", "zero", "mean", "other-model")
# The ablation tables and CLI call other-model replacement "cross-model" (paper wording); both names mean one value.
VALUE_ALIASES = {"cross-model": "other-model"}
SPEC_KEYS = ("site", "head", "position", "value")
ENCODER_OUTPUT = Site.parse("encoder.output")


def _check_value(value, where: str) -> str:
    value = VALUE_ALIASES.get(value, value)
    if value not in VALUES:
        raise GenIRError(f"{where}key 'value': {value!r} is not one of {', '.join(VALUES)}")
    return value


def _check_index(data: dict, key: str, where: str) -> None:
    v = data.get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
        raise GenIRError(f"{where}key {key!r}: {v!r} is not a non-negative integer")


@dataclass(frozen=True)
class InterventionSpec:
    """One overwritten slice: a site, optionally one head and one position, and the value written there.

    Example:
        >>> InterventionSpec("decoder.layers.3.cross_attn.heads", head=2)            # source-run patch of one head
        >>> InterventionSpec("encoder.output", position=4)                          # one encoder token
        >>> InterventionSpec("decoder.layers.0.mlp", value="zero").to_dict()
        {'site': 'decoder.layers.0.mlp', 'value': 'zero'}
    """

    site: str
    head: int | None = None
    position: int | None = None
    value: str = "source"

    def __post_init__(self):
        object.__setattr__(self, "site", self.site.name if isinstance(self.site, Site) else str(self.site))
        object.__setattr__(self, "value", _check_value(self.value, f"{self.site}: "))

    @property
    def parsed(self) -> Site:
        """The spec's site as a Site."""
        return Site.parse(self.site)

    def to_dict(self) -> dict:
        """The spec as a file entry, leaving out unset fields."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data, where: str = "") -> "InterventionSpec":
        """A spec from its dict form; errors name `where` (e.g. "sweep.yaml, intervention 3, spec 0") and the key."""
        prefix = f"{where}, " if where else ""
        if not isinstance(data, dict):
            raise GenIRError(f"{prefix}a spec is a mapping with keys {', '.join(SPEC_KEYS)}; got {data!r}")
        unknown = sorted(set(data) - set(SPEC_KEYS))
        if unknown:
            raise GenIRError(f"{prefix}key {unknown[0]!r}: unknown; a spec has keys {', '.join(SPEC_KEYS)}")
        if "site" not in data:
            raise GenIRError(f"{prefix}key 'site': missing; every spec names a site, e.g. decoder.layers.3.cross_attn")
        try:
            Site.parse(str(data["site"]))
        except GenIRError as exc:
            raise GenIRError(f"{prefix}key 'site': {exc}") from None
        for key in ("head", "position"):
            _check_index(data, key, prefix)
        return cls(str(data["site"]), data.get("head"), data.get("position"), _check_value(data.get("value", "source"), prefix))

    def axes(self) -> dict:
        """The named axes of this spec in result tables: site, side, layer, component, head, position."""
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
        return f"{self.site}{extra}" + ("" if self.value == "source" else f"={self.value}")


def _as_spec(item) -> InterventionSpec:
    if isinstance(item, InterventionSpec):
        return item
    if isinstance(item, tuple) and len(item) == 2:  # (Site or site name, value): how ablations and circuits list replacements
        site, value = item
        return InterventionSpec(site.name if isinstance(site, Site) else str(site), value=value)
    raise GenIRError(f"an intervention holds InterventionSpecs or (site, value) pairs; got {item!r}")


@dataclass(frozen=True)
class Intervention:
    """A named group of specs applied together in one run; `labels` become table columns.

    Example:
        >>> zero_mlps = Intervention.of(gm.components("decoder", ("mlp",)), "zero", component="mlp", method="zero")
        >>> Intervention((InterventionSpec("decoder.layers.2.cross_attn.heads", head=1),), {"patch": "L2H1"})
        >>> Intervention(((Site("decoder", 0, "mlp"), "mean"),))                  # (site, value) pairs work too
        >>> Intervention(())                                                      # nothing replaced: the intact run
    """

    specs: tuple[InterventionSpec, ...] = ()
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "specs", tuple(_as_spec(s) for s in self.specs))
        object.__setattr__(self, "labels", dict(self.labels or {}))

    @classmethod
    def of(cls, sites: Iterable[Site], value: str, **labels) -> "Intervention":
        """Every site replaced whole by one value."""
        return cls(tuple(InterventionSpec(s.name, value=value) for s in sites), labels)

    @property
    def sites(self) -> list[Site]:
        """The sites this intervention writes, in spec order."""
        return [s.parsed for s in self.specs]

    @property
    def replace(self) -> tuple[tuple[Site, str], ...]:
        """(site, value) per spec, the shape ablation and circuit callers read."""
        return tuple((s.parsed, s.value) for s in self.specs)

    def to_dict(self) -> dict:
        """The intervention as a file entry: its labels and its specs."""
        return {"labels": dict(self.labels), "specs": [s.to_dict() for s in self.specs]}

    def __str__(self) -> str:
        label = ", ".join(f"{k}={v}" for k, v in self.labels.items())
        return f"[{label}] " * bool(label) + "; ".join(map(str, self.specs))


def check_spec(adapter, spec: InterventionSpec, where: str) -> Site:
    """One spec against the model's shape; raises GenIRError prefixed with `where`."""
    try:
        site = adapter.validate(spec.parsed)
    except GenIRError as exc:
        raise GenIRError(f"{where}: {exc}") from None
    if site.facet == "final_norm":
        raise GenIRError(f"{where}: the final norm is not an intervention target; use the last layer's resid_post instead")
    if spec.head is not None:
        if site.facet != "heads":
            raise GenIRError(f"{where}: a head can only be given for a .heads site (e.g. decoder.layers.0.cross_attn.heads)")
        if not 0 <= spec.head < adapter.n_heads:
            raise GenIRError(f"{where}: head {spec.head} out of range; the model has {adapter.n_heads} heads")
    if spec.position is not None and spec.position < 0:
        raise GenIRError(f"{where}: position must be >= 0, got {spec.position}")
    return site


def validate_interventions(gm, interventions: list[Intervention], source: str = "") -> list[Intervention]:
    """Check every spec of every intervention against the model; errors name the source, the intervention and the spec."""
    prefix = f"{source}, " if source else ""
    for i, group in enumerate(interventions):
        for j, spec in enumerate(group.specs):
            check_spec(gm.adapter, spec, f"{prefix}intervention {i}, spec {j} ({spec})")
    return interventions
