"""Work units: a sweep split into (model x experiment [x patching target]) pieces, each with a key, its dependencies and a cost.

    units = plan(config)            # in run order; a unit's dependencies come before it
    units[3].id, units[3].key, units[3].after, units[3].folder(config.out)

A unit's `key` is the hash of everything its result depends on (the pipeline,
its parameters, the model entry and device/dtype, the data spec, and the keys
of the units it reads from), so a resumed sweep skips a finished unit only
when the config that made it is unchanged. `cost` estimates the unit's work
in forward rows (one query through the model once), from the model's shape and
the data; `genir-mech sweep --dry-run` prints it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .config import EXPANDED, Experiment, SweepConfig


@dataclass
class Unit:
    """One pipeline run on one model: what it runs, where it writes, what it waits for."""

    id: str  # <model>/<experiment name>[/<target>]: also its folder under the sweep's out
    experiment: Experiment
    model: str
    params: dict  # the experiment's parameters with an expanded list value replaced by this unit's one
    after: list[str] = field(default_factory=list)  # ids of units whose results this one reads
    key: str = ""
    cost: int = 0

    def folder(self, out: Path) -> Path:
        return Path(out) / self.id

    @property
    def models(self) -> list[str]:
        """Every model this unit loads: its own, the cross-model of an ablation, the encoders of a swap."""
        extra = ([self.params["other"]] if self.params.get("other") else []) + list(self.params.get("encoders") or [])
        return [self.model, *extra]


def _hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(config: SweepConfig) -> list[Unit]:
    """The units of a sweep in file order (a stages reference always points to an earlier experiment), with keys."""
    units: list[Unit] = []
    by_id: dict[str, Unit] = {}
    for exp in config.experiments:
        expand = EXPANDED.get(exp.run)
        values = exp.params.get(expand) if expand else None
        variants = [(v, {**exp.params, expand: v}) for v in values] if isinstance(values, list) else [(None, exp.params)]
        for model in exp.models:
            for suffix, params in variants:
                uid = f"{model}/{exp.name}" + (f"/{suffix}" if suffix else "")
                stages = params.get("stages")
                after = [f"{model}/{stages[1:]}"] if isinstance(stages, str) and stages.startswith("@") else []
                unit = Unit(uid, exp, model, params, after)
                entries = {m: config.models[m].model_dump() | {"device": config.model_device(m), "dtype": config.model_dtype(m)} for m in unit.models}
                unit.key = _hash({"run": exp.run, "params": params, "models": entries, "data": config.data, "after": [by_id[a].key for a in after]})
                units.append(unit)
                by_id[uid] = unit
    return units


# -- estimated cost ------------------------------------------------------------------------------------------


def estimate_costs(config: SweepConfig, units: list[Unit], shapes: dict, datasets: dict) -> None:
    """Fill `unit.cost`: forward rows from the model shape (`shapes[model]`, config.model_shape) and the data (`datasets[model]`)."""
    from ..patching.specs import TARGETS

    for unit in units:
        gm, data, p, run = shapes[unit.model], datasets[unit.model], unit.params, unit.experiment.run
        layers, heads = gm.n_layers("decoder"), gm.adapter.n_heads
        kinds = len(p.get("kinds") or gm.adapter.kinds("decoder"))

        def split_size(name, default):
            return len(data.split(p.get(name) or default)) if data is not None else 0

        n_q = split_size("split", "test" if run == "eval" else "validation")
        if p.get("max_queries"):
            n_q = min(n_q, p["max_queries"])
        n_pairs = len(data.pairs) if data is not None and getattr(data, "pairs", None) else 0
        n_pairs = min(n_pairs, p["n_pairs"]) if p.get("n_pairs") else n_pairs
        n_stages = 3
        methods = len(p.get("methods") or ("zero", "mean"))
        ranking = split_size("split", "validation") if run not in ("eval", "swap") else 0  # the correct-query ranking (cached)
        if run == "eval":
            cost = n_q
        elif run in ("contributions", "lens", "read"):
            cost = ranking + n_q
        elif run == "stages":
            cost = ranking + n_q * (1 + layers * len(gm.adapter.kinds("decoder")) + layers)
        elif run == "ablate":
            cost = ranking + n_q * (1 + n_stages * kinds * methods + (layers * kinds * methods if p.get("per_layer") else 0))
        elif run == "circuit":
            cost = ranking + n_q + 2 * split_size("eval_split", "test")
        elif run == "swap":
            cost = 2 * len(p.get("encoders") or [1, 1, 1]) * split_size("vanilla_split", "validation")
        elif run == "patch":
            target = p.get("target")
            per = {"resid": layers, "component": layers * kinds, "head": layers * heads * 2, "encoder-position": 16,
                   "encoder-layer-position": 16 * max(1, gm.n_layers("encoder") if "encoder" in gm.adapter.sides else 1)}
            cost = 2 * n_pairs + n_pairs * (per.get(target, layers) if target in TARGETS else 32)
        else:  # attribute: two passes and a backward per pair, then the exact verification of the top k
            cost = 2 * n_pairs + 3 * n_pairs + n_pairs * (p.get("verify_top_k") or 0)
        unit.cost = max(1, int(cost))
