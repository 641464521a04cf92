"""Optimal change-point segmentation of a per-layer feature profile into contiguous stages.

    parts = optimal_partitions(features, max_stages=6)            # {k: (sse, starts)}: the best split into k stages, every k
    seg = segment_profile(features, min_size=1, max_stages=6)     # features: (n_layers, n_features) array
    seg.starts            # first layer of every stage, e.g. (0, 3, 5)
    seg.criterion         # {k: penalised criterion} for every feasible number of stages k
    path = knob_path(features, RESOLUTION_GRID)                   # the k the criterion picks at every resolution

The stage localiser uses `optimal_partitions` for its candidates (one per k,
no knob involved) and decides the number of stages by functional tests
(analyses.stage_localisation); the penalised criterion below decides it only
when no functional evidence is given, and `knob_path` reports how its answer
moves with the resolution, the knob that used to decide it.

Model: each stage has a constant mean feature vector and layers scatter around
it with one isotropic noise variance sigma^2. For every k the partition that
minimises the within-stage sum of squares (SSE) is found exactly by dynamic
programming (O(k * n_layers^2)); k is then chosen by the Schwarz (BIC)
criterion for mean shifts with known variance,

    SSE_k / sigma^2 + penalty * (k*p + k - 1) * log(n_layers * p),

which counts k*p stage means and k-1 change points as parameters over
n_layers * p observed numbers. sigma is estimated from the profile itself: the
median absolute difference between neighbouring layers (robust to the few
jumps at stage boundaries), never below `resolution`, the smallest feature
difference treated as structure (features are shares, cosines and fractions,
so 0.01 is one percentage point). Because k=1 is always a candidate, a profile
without structure yields one stage; nothing forces three.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import GenIRError
from ..vocabulary import STAGE_PENALTY, STAGE_RESOLUTION

DEFAULT_RESOLUTION = STAGE_RESOLUTION
MIN_DIFFERENCES = 7  # a robust noise estimate needs the boundaries to be a minority of layer differences
DEFAULT_PENALTY = STAGE_PENALTY
# Resolutions at which the knob path is reported: 10^-2.75 (0.0018, a fifth of a percentage point) to 10^-0.25 (0.56, half
# the range of a share or a cosine), 8 steps a decade, so 0.01, 0.0316, 0.1 (the default) and 0.316 are on it.
RESOLUTION_GRID = tuple(float(f"{10 ** (e / 8):.4g}") for e in range(-22, -1))


@dataclass(frozen=True)
class Segmentation:
    """The best partition of a layer profile into contiguous stages, with the costs that chose it."""
    starts: tuple[int, ...]  # first layer of each stage; starts[0] == 0
    n_layers: int
    sse: dict[int, float]  # best within-stage sum of squares for each k
    criterion: dict[int, float]  # penalised criterion for each k (lower is better)

    @property
    def n_stages(self) -> int:
        """Number of stages in the chosen partition."""
        return len(self.starts)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Layers where a new stage begins (every start but the first)."""
        return self.starts[1:]

    def spans(self) -> list[tuple[int, int]]:
        """(first, last) layer of each stage, inclusive."""
        ends = [*self.starts[1:], self.n_layers]
        return [(s, e - 1) for s, e in zip(self.starts, ends)]


def _segment_cost_table(x: np.ndarray) -> np.ndarray:
    """cost[i, j] = sum of squared deviations from the mean of rows i..j-1 (inf where j <= i)."""
    n = x.shape[0]
    s1 = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    s2 = np.concatenate([[0.0], np.cumsum((x**2).sum(1))])
    i, j = np.triu_indices(n + 1, k=1)
    cost = np.full((n + 1, n + 1), np.inf)
    total = s1[j] - s1[i]
    cost[i, j] = np.maximum(s2[j] - s2[i] - (total**2).sum(1) / (j - i), 0.0)
    return cost


def optimal_partitions(x: np.ndarray, max_stages: int, min_size: int = 1) -> dict[int, tuple[float, tuple[int, ...]]]:
    """{k: (sse, starts)} of the least-squares partition into k contiguous stages, for every feasible k <= max_stages."""
    n = x.shape[0]
    cost = _segment_cost_table(x)
    inf = np.inf
    best = np.full((max_stages + 1, n + 1), inf)
    back = np.zeros((max_stages + 1, n + 1), dtype=int)
    best[0, 0] = 0.0
    for k in range(1, max_stages + 1):
        for j in range(k * min_size, n + 1):
            # the k-th stage is rows i..j-1 and must hold at least min_size layers
            i = np.arange((k - 1) * min_size, j - min_size + 1)
            if i.size == 0:
                continue
            cand = best[k - 1, i] + cost[i, j]
            m = int(np.argmin(cand))
            best[k, j], back[k, j] = cand[m], i[m]
    out = {}
    for k in range(1, max_stages + 1):
        if not np.isfinite(best[k, n]):
            continue
        starts, j = [], n
        for kk in range(k, 0, -1):
            j = back[kk, j]
            starts.append(int(j))
        out[k] = (float(best[k, n]), tuple(reversed(starts)))
    return out


def noise_variance(x: np.ndarray, resolution: float = DEFAULT_RESOLUTION) -> float:
    """Per-feature layer-to-layer noise variance, never below resolution^2.

    Differences between neighbouring layers are noise except at the few stage
    boundaries, so the median over layers of the mean squared difference
    (halved: a difference carries the noise of two layers) ignores the jumps
    the segmentation looks for. With fewer than MIN_DIFFERENCES differences the
    jumps could be the majority, so shallow decoders use `resolution` alone.
    """
    if x.shape[0] - 1 < MIN_DIFFERENCES:
        return resolution**2
    step = (np.diff(x, axis=0) ** 2).mean(1)
    return max(float(np.median(step)) / 2, resolution**2)


def segment_profile(
    features: np.ndarray,
    min_size: int = 1,
    max_stages: int | None = None,
    penalty: float = DEFAULT_PENALTY,
    resolution: float = DEFAULT_RESOLUTION,
) -> Segmentation:
    """Split the rows (layers) of `features` into the number of contiguous stages the criterion supports."""
    x = np.asarray(features, dtype=float)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise GenIRError(f"segmentation needs a (n_layers, n_features) profile, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise GenIRError("the layer profile contains NaN or infinite values; check the contribution table")
    n = x.shape[0]
    if min_size < 1 or min_size > n:
        raise GenIRError(f"min_stage_size {min_size} (CLI: --min-stage-size): must lie between 1 and the number of decoder layers ({n})")
    max_stages = min(max_stages or n, n // min_size)
    return penalised_choice(x, optimal_partitions(x, max_stages, min_size), penalty, resolution)


def penalised_choice(x: np.ndarray, parts: dict[int, tuple[float, tuple[int, ...]]], penalty: float = DEFAULT_PENALTY,
                     resolution: float = DEFAULT_RESOLUTION) -> Segmentation:
    """The partition among `parts` (from optimal_partitions of `x`) that the penalised criterion picks at this penalty and resolution."""
    n, p = x.shape
    sigma2 = noise_variance(x, resolution)
    crit = {k: sse / sigma2 + penalty * (k * p + k - 1) * math.log(n * p) for k, (sse, _) in parts.items()}
    k_best = min(crit, key=lambda k: (crit[k], k))  # ties go to fewer stages
    return Segmentation(parts[k_best][1], n, {k: v[0] for k, v in parts.items()}, crit)


def knob_path(features: np.ndarray, resolutions=RESOLUTION_GRID, min_size: int = 1, max_stages: int | None = None,
              penalty: float = DEFAULT_PENALTY) -> list[tuple[float, Segmentation]]:
    """(resolution, the segmentation the penalised criterion picks there) for every resolution: how the answer moves with the knob."""
    x = np.asarray(features, dtype=float)
    n = x.shape[0]
    parts = optimal_partitions(x, min(max_stages or n, n // min_size), min_size)
    return [(float(r), penalised_choice(x, parts, penalty, r)) for r in resolutions]
