"""Registry of `genir-mech` verbs: one module per verb, each exposing a `VERB`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Verb:
    help: str
    add_arguments: Callable
    run: Callable


def _load() -> dict[str, Verb]:
    from . import data, train, evaluate, stages, swap
    from . import ablate, circuit, contributions, figures, lens, read
    from . import attribute, patch
    from . import demo

    decoder_analyses = {"contributions": contributions.VERB, "lens": lens.VERB, "ablate": ablate.VERB, "circuit": circuit.VERB, "read": read.VERB, "figures": figures.VERB}
    patching = {"patch": patch.VERB, "attribute": attribute.VERB}
    return {"demo": demo.VERB, "data": data.VERB, "train": train.VERB, "eval": evaluate.VERB, "stages": stages.VERB, "swap": swap.VERB, **decoder_analyses, **patching}


VERBS = _load()
