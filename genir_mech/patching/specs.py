"""Patch specifications: a sweep is data, a list of specs that can be saved, diffed and rerun.

    specs = target_specs(gm, "head")                       # every decoder attention head
    save_specs(specs, "runs/my_sweep.yaml"); specs = load_specs("runs/my_sweep.yaml")
    PatchSpec("decoder.layers.3.cross_attn.heads", head=2) # one head's d_head slice
    PatchSpec("encoder.output", position=4)                # one encoder token position

`PatchSpec` is `genir_mech.interventions.InterventionSpec` (value `source`
unless given): a standard site, optionally one head of a `.heads` site and
optionally one sequence position. A sweep file is the one intervention file
format (JSON or YAML), one single-spec intervention per patch; older sweep
files, a JSON list of specs, are still read.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import GenIRError
from ..interventions import Intervention, InterventionSpec, check_spec, save_interventions
from ..interventions.files import interventions_from_data, read_data
from ..models.components import ATTENTION_KINDS
from ..vocabulary import PATCH_TARGETS

TARGETS = PATCH_TARGETS
# A patch spec is an intervention spec; the old name stays for callers and readers of the patching papers.
PatchSpec = InterventionSpec


def validate_specs(gm, specs: list[InterventionSpec]) -> list[InterventionSpec]:
    """Check every spec against the model's shape; raises GenIRError naming the spec."""
    for i, spec in enumerate(specs):
        check_spec(gm.adapter, spec, f"patch spec {i} ({spec})")
    return specs


def target_specs(gm, target: str, *, encoder_positions: int = 0, decoder_positions: int = 1, kinds: tuple[str, ...] | None = None) -> list[InterventionSpec]:
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


def save_specs(specs: list[InterventionSpec], path: str | Path) -> Path:
    """Write a sweep as an intervention file (.json, .yaml or .yml), one single-spec intervention per patch."""
    return save_interventions([Intervention((spec,)) for spec in specs], path)


def load_specs(path: str | Path) -> list[InterventionSpec]:
    """Read a sweep: an intervention file whose interventions hold one spec each, or an older JSON list of specs."""
    path = Path(path)
    data = read_data(path)
    if isinstance(data, list):  # the sweep format before intervention files
        return [InterventionSpec.from_dict(item, f"{path}, spec {i}") for i, item in enumerate(data)]
    groups = interventions_from_data(data, str(path))
    for i, group in enumerate(groups):
        if len(group.specs) != 1:
            raise GenIRError(f"{path}, intervention {i}: a patch sweep patches one spec per intervention, found {len(group.specs)}")
    return [group.specs[0] for group in groups]
