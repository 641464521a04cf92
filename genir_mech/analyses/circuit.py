"""Minimal circuits: keep some decoder components, zero or mean-ablate the rest, and measure retrieval (paper Table 4).

    circuit = paper_circuit(gm, stages)      # zero all self-attn and first-stage cross-attn, mean the first two stages' MLPs
    circuit = parse_circuit(gm, "zero=self_attn@all;zero=cross_attn@priming;mean=mlp@priming+bridging", stages)
    circuit = parse_circuit(gm, "circuit.yaml")   # an intervention file (genir_mech.interventions.files) holding one intervention
    save_interventions([circuit], "circuit.yaml")  # ... which is how a circuit is written
    df = evaluate_circuits(gm, texts, relevant_docs, {"paper": circuit}, mean_texts=correct_validation_texts)

A circuit is an `Intervention` (genir_mech.interventions) whose specs zero or
mean-ablate the removed decoder components; the spec mini-language above is
a parser that produces one. Older circuit JSON files, {"zero": [site names],
"mean": [...]}, are still read.

Columns: circuit, configuration (`intact`, `circuit`, `relative` = circuit / intact
in %), metric (hits@1, hits@5, hits@10 in %; components_kept, components_total),
value. All circuits and the intact model run in the same batched passes.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import pandas as pd
import torch

from ..errors import GenIRError, NotApplicable
from ..interventions import Intervention, InterventionSpec, validate_interventions
from ..interventions.files import SUFFIXES, interventions_from_data, read_data
from ..models.components import Site
from ..retrieval import hits_at
from ..stage_definition import StageDefinition
from .ablation import ablation_ranks, component_means

HITS_AT = (1, 5, 10)
CIRCUIT_METHODS = ("zero", "mean")


def paper_circuit(gm, stages: StageDefinition) -> Intervention:
    """The paper's circuit for any stage definition: zero every self-attention and the first
    stage's cross-attention, mean-ablate the MLPs of the first two stages.

    It is defined for the paper's three stages (priming, bridging, interaction), and needs at least three:
    with fewer, the first two stages cover the whole decoder and the "circuit" would remove every MLP (and, with
    one stage, every component), so a NotApplicable error says so instead of reporting that as a result (a sweep
    records the unit as skipped with that reason).
    """
    stages.check(gm.n_layers("decoder"))
    if len(stages.stages) < 3:
        raise NotApplicable(f"the paper's circuit needs at least 3 stages (it keeps the cross-attention after the first and the MLPs after the "
                         f"first two); the stage definition has {len(stages.stages)} ({', '.join(stages.names())}). "
                         "Give a circuit of your own (CLI: --circuit, e.g. zero=self_attn@all)")
    first = list(stages.stages[0].layers)
    first_two = [l for s in stages.stages[:2] for l in s.layers]
    zero = [Site("decoder", l, "self_attn") for l in range(gm.n_layers("decoder"))] + [Site("decoder", l, "cross_attn") for l in first]
    mean = [Site("decoder", l, "mlp") for l in first_two]
    return Intervention(tuple((s, "zero") for s in zero) + tuple((s, "mean") for s in mean), {"circuit": "paper"})


def _layers_of(where: str, stages: StageDefinition | None, n_layers: int, spec: str) -> list[int]:
    layers = []
    for part in where.split("+"):
        if part == "all":
            layers += range(n_layers)
        elif part[:1].isdigit():
            lo, _, hi = part.partition("-")
            layers += range(int(lo), int(hi or lo) + 1)
        elif stages is not None and part in stages.names():
            layers += stages.layers(part)
        else:
            raise GenIRError(f"circuit spec {spec!r}: {part!r} is neither 'all', a layer range like 0-3, nor a stage ({', '.join(stages.names()) if stages else 'no stages given'})")
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise GenIRError(f"circuit spec {spec!r}: layer(s) {bad} out of range; the decoder has {n_layers} layers")
    return sorted(set(layers))


def _legacy_circuit(data: dict, path: Path) -> Intervention:
    """An old circuit file, {"zero": [site names], "mean": [...]}."""
    for method in CIRCUIT_METHODS:
        if not isinstance(data.get(method, []), list):
            raise GenIRError(f"{path}, key {method!r}: a list of component names")
    return Intervention(tuple(InterventionSpec.from_dict({"site": name, "value": method}, f"{path}, key {method!r}, entry {j}")
                              for method in CIRCUIT_METHODS for j, name in enumerate(data.get(method, []))))


def _circuit_file(gm, path: Path) -> Intervention:
    data = read_data(path)
    if isinstance(data, dict) and data and set(data) <= set(CIRCUIT_METHODS):
        circuit = _legacy_circuit(data, path)
    else:
        groups = interventions_from_data(data, str(path))
        if len(groups) != 1:
            raise GenIRError(f"{path}: a circuit file holds exactly one intervention, found {len(groups)}")
        circuit = groups[0]
    validate_interventions(gm, [circuit], str(path))
    for j, spec in enumerate(circuit.specs):
        site = spec.parsed
        if site.side != "decoder" or site.facet != "out" or not site.kind or spec.head is not None or spec.position is not None:
            raise GenIRError(f"{path}, intervention 0, spec {j}: {spec} is not a whole decoder component output (e.g. decoder.layers.3.mlp)")
        if spec.value not in CIRCUIT_METHODS:
            raise GenIRError(f"{path}, intervention 0, spec {j}, key 'value': a circuit removes components with {' or '.join(CIRCUIT_METHODS)}, not {spec.value!r}")
    return circuit


def parse_circuit(gm, spec: str, stages: StageDefinition | None = None, name: str = "circuit") -> Intervention:
    """`method=kind@where;...` (where: all | stage names or layer ranges joined by +) or an intervention file (.json, .yaml)."""
    n_layers = gm.n_layers("decoder")
    replace: dict[Site, str] = {}
    if Path(spec).suffix.lower() in SUFFIXES:
        path = Path(spec)
        if not path.exists():
            raise GenIRError(f"{path}: circuit file not found")
        replace = {s.parsed: s.value for s in _circuit_file(gm, path).specs}
    else:
        for entry in filter(None, (e.strip() for e in spec.split(";"))):
            method, _, target = entry.partition("=")
            kind, _, where = target.partition("@")
            if method not in CIRCUIT_METHODS or kind not in gm.adapter.kinds("decoder") or not where:
                raise GenIRError(f"circuit spec entry {entry!r}: expected method=kind@where with method in {CIRCUIT_METHODS}, kind in {gm.adapter.kinds('decoder')}, e.g. zero=self_attn@all")
            for layer in _layers_of(where, stages, n_layers, spec):
                replace[Site("decoder", layer, kind)] = method
    if not replace:
        raise GenIRError(f"circuit spec {spec!r} removes no component")
    return Intervention(tuple(sorted(replace.items(), key=lambda item: gm.adapter.order_key(item[0]))), {"circuit": name})


def components_kept(gm, circuit: Intervention) -> tuple[int, int]:
    """(components the circuit keeps, decoder components in all)."""
    total = len(gm.components("decoder"))
    return total - len(set(circuit.sites)), total


def evaluate_circuits(
    gm,
    texts: list[str],
    relevant_docs: Sequence[str | Collection[str]],
    circuits: dict[str, Intervention],
    mean_texts: Sequence[str] | None = None,
    batch_size: int = 64,
    rows_per_forward: int = 4096,
    progress: bool = False,
) -> pd.DataFrame:
    """Hits@1/5/10 of the intact model and of each circuit on the given queries (see the module docstring).

    `relevant_docs[i]` is query i's relevant document, or the collection of all of them: a query with several is
    ranked by its best-ranked relevant document (Success@k, as in retrieval.evaluate).
    """
    if not circuits:
        raise GenIRError("no circuit to evaluate")
    if len(texts) != len(relevant_docs):
        raise GenIRError(f"{len(texts)} queries but {len(relevant_docs)} relevant-document entries")
    groups = [[d] if isinstance(d, str) else sorted(d) for d in relevant_docs]
    if any(not g for g in groups):
        raise GenIRError("a query has no relevant document")
    # one row per (query, relevant document); a query's rank is the best of its rows
    owner = torch.tensor([i for i, g in enumerate(groups) for _ in g])
    flat_texts, flat_docs = [texts[i] for i in owner.tolist()], [d for g in groups for d in g]
    mean_sites = list(dict.fromkeys(s for c in circuits.values() for s, m in c.replace if m == "mean"))
    if mean_sites and not mean_texts:
        raise GenIRError("mean-ablated circuit components need reference queries (mean_texts: the correct validation queries)")
    means = component_means(gm, list(mean_texts), mean_sites, batch_size) if mean_sites else None
    ablations = [Intervention(())] + list(circuits.values())
    flat = ablation_ranks(gm, flat_texts, flat_docs, ablations, means=means, batch_size=batch_size, rows_per_forward=rows_per_forward, progress=progress).doc_rank
    ranks = torch.full((flat.shape[0], len(groups)), torch.iinfo(flat.dtype).max, dtype=flat.dtype).scatter_reduce(
        1, owner.expand(flat.shape[0], -1), flat, "amin")
    rows = []
    for i, name in enumerate(circuits, start=1):
        for k in HITS_AT:
            intact, kept = 100.0 * float(hits_at(ranks[0], k)), 100.0 * float(hits_at(ranks[i], k))
            rows += [
                (name, "intact", f"hits@{k}", intact),
                (name, "circuit", f"hits@{k}", kept),
                (name, "relative", f"hits@{k}", 100.0 * kept / intact if intact else float("nan")),
            ]
        n_kept, total = components_kept(gm, circuits[name])
        rows += [(name, "circuit", "components_kept", n_kept), (name, "circuit", "components_total", total)]
    df = pd.DataFrame(rows, columns=["circuit", "configuration", "metric", "value"])
    df["n_queries"] = len(texts)
    return df
