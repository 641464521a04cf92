"""Retrieval measure names: ir_measures' own (`Success@1`, `RR`, `R@10`, `nDCG@10`, any it parses) and genir_mech's older aliases.

    parse_measures("Success@1,nDCG@10,mrr")   -> (Success@1, nDCG@10, RR) as ir_measures objects
    ALIASES["hits@1"] == "Success@1"

Light on purpose (ir_measures only, no torch) so the command line checks
`--metrics` while parsing.
"""
from __future__ import annotations

import ir_measures

from ..errors import GenIRError

# The names genir_mech reported before it followed ir_measures; still accepted, and still written next to the new names.
ALIASES = {"hits@1": "Success@1", "hits@5": "Success@5", "hits@10": "Success@10", "mrr": "RR"}
DEFAULT_MEASURES = ("Success@1", "Success@5", "Success@10", "RR", "R@10", "nDCG@10")


def parse_measures(names: str | tuple[str, ...] | list[str]) -> tuple:
    """ir_measures measure objects for comma-separated `names` (ir_measures names or ALIASES); GenIRError names a bad one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names:
        raise GenIRError("no retrieval measure given; e.g. Success@1,RR,nDCG@10")
    measures = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(ALIASES.get(name, name)))
        except (NameError, ValueError, TypeError, SyntaxError) as exc:
            raise GenIRError(f"unknown retrieval measure {name!r} ({exc}); use ir_measures names such as "
                             f"{', '.join(DEFAULT_MEASURES)} or the aliases {', '.join(ALIASES)}") from None
    return tuple(dict.fromkeys(measures))


def aliases_of(values: dict[str, float]) -> dict[str, float]:
    """The alias entries (hits@1, mrr, ...) for measures present in `values`, keyed by their old names."""
    return {alias: values[name] for alias, name in ALIASES.items() if name in values}
