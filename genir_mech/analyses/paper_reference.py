"""The paper's T5-large numbers the suite compares against, in one place.

Source: Reusch & Belinkov, "Reverse-Engineering the Retrieval Process in GenIR Models" (SIGIR 2025,
arXiv 2503.19715), as collected in the project's research brief (shared/docs/research-brief.md, section 1:
"Setup" for the model and Hits@1, "Analyses and their results" items 1 (contributions: the stages and their
layers) and 3 (stage ablations, Table 3, NQ10k)). Layers are 0-based, inclusive.
"""
from __future__ import annotations

from ..vocabulary import PAPER_STAGES

MODEL = "T5-large (paper, NQ10k)"
DECODER_LAYERS = 24
TEST_HITS_AT_1 = 0.404  # NQ10k test Hits@1

# stage -> (first layer, last layer, the component that dominates its contribution ratio)
STAGES = dict(zip(PAPER_STAGES, ((0, 6, "mlp"), (7, 17, "cross_attn"), (18, 23, "mlp"))))

# Table 3: % of correct queries whose relevant document leaves rank 1 when a component type is ablated in every
# layer of a stage at once; method -> component -> one value per stage, in PAPER_STAGES order. The paper gives
# no self-attention row for mean ablation and no cross-model numbers in the brief.
ABLATION_PCT_LEFT_RANK1 = {
    "zero": {"mlp": (92.9, 7.8, 96.7), "cross_attn": (4.3, 21.7, 39.7), "self_attn": (1.5, 2.3, 6.6)},
    "mean": {"mlp": (0.8, 5.6, 48.2), "cross_attn": (4.6, 20.5, 42.9)},
}


def stage_rows() -> list[dict]:
    """One row per paper stage: name, layer span, span as fractions of depth, dominant component and its ablation losses."""
    rows = []
    for i, (name, (first, last, dominant)) in enumerate(STAGES.items()):
        losses = {f"{method} {kind}": values[i] for method, by_kind in ABLATION_PCT_LEFT_RANK1.items() for kind, values in by_kind.items()}
        rows.append({"model": MODEL, "stage": name, "layers": f"{first}-{last}", "depth_from": first / DECODER_LAYERS,
                     "depth_to": (last + 1) / DECODER_LAYERS, "dominant": dominant, **losses})
    return rows
