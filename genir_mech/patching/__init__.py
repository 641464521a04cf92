"""Activation patching and attribution patching over clean/corrupted query pairs.

    from genir_mech.patching import dataset_pairs, keep_correct, tokenize_pairs, component_sweep, attribute, aggregate
    pairs, report = keep_correct(gm, dataset_pairs(dataset))
    batch = tokenize_pairs(gm, pairs[:64])
    summary = aggregate(component_sweep(gm, batch))          # layer x component, bootstrap CIs
    atp = attribute(gm, batch)                               # every node from 2 forwards + 1 backward

pairs: where pairs come from and how their positions line up; specs: a sweep
as data (intervention specs in the one JSON/YAML intervention file format);
metrics: plug-in metrics on logits; engine: the one generic sweep, run as
batched rows by genir_mech.interventions' executor, and its named specialisations;
attribution: AtP, the AtP* QK fix and verify_top_k; aggregation: bootstrap
means per patch.
"""
from .aggregation import aggregate
from .attribution import attribute, attribution_nodes, verify_top_k
from .engine import component_sweep, encoder_layer_position_sweep, encoder_position_sweep, head_sweep, resid_sweep, sweep
from .metrics import METRICS, PairTargets, logit_diff
from .pairs import QueryPair, dataset_pairs, keep_correct, read_pairs, tokenize_pairs
from .specs import PatchSpec, load_specs, save_specs, target_specs

__all__ = [
    "aggregate", "attribute", "attribution_nodes", "verify_top_k", "sweep", "resid_sweep", "component_sweep", "head_sweep",
    "encoder_position_sweep", "encoder_layer_position_sweep", "METRICS", "PairTargets", "logit_diff", "QueryPair", "dataset_pairs",
    "keep_correct", "read_pairs", "tokenize_pairs", "PatchSpec", "load_specs", "save_specs", "target_specs",
]
