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
    from . import train, evaluate, stages, swap

    return {"train": train.VERB, "eval": evaluate.VERB, "stages": stages.VERB, "swap": swap.VERB}


VERBS = _load()
