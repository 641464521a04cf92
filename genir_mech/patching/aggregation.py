"""Aggregate per-pair patching results into means with seeded bootstrap confidence intervals.

    summary = aggregate(table)                                    # sweep table: normalised logit-diff effect per patch
    summary = aggregate(table, value="value", metric="clean_rank")
    summary = aggregate(atp_table, value="estimate")              # attribution table: per node and method

Pairs are resampled jointly for all patches (one resample is one set of
pairs), so the intervals of different patches are comparable. Rows whose
value is NaN (a position that is padding for a pair; a normalised effect with
equal clean and corrupted baselines) are left out of that patch's mean.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import GenIRError
from ..vocabulary import MAX_N_BOOT

AXES = ["direction", "site", "side", "layer", "component", "head", "position"]


def bootstrap_means(matrix: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row means of a (groups, pairs) matrix (NaN = missing) and their percentile bootstrap interval over pairs."""
    if n_boot > MAX_N_BOOT:
        raise GenIRError(f"n_boot must be at most {MAX_N_BOOT} resamples, got {n_boot}")
    n_pairs = matrix.shape[1]
    observed = ~np.isnan(matrix)
    filled = np.where(observed, matrix, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(1) / observed.sum(1)
    if n_boot < 1 or n_pairs < 2:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    rng = np.random.default_rng(seed)
    # A resample is a multiset of pairs: counts per pair make every group's mean one matrix product.
    counts = np.stack([np.bincount(rng.integers(0, n_pairs, n_pairs), minlength=n_pairs) for _ in range(n_boot)]).T.astype(float)  # (pairs, boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (filled @ counts) / (observed.astype(float) @ counts)  # (groups, boot)
    alpha = (1.0 - ci) / 2.0
    low, high = np.nanquantile(boot, [alpha, 1.0 - alpha], axis=1) if boot.size else (mean, mean)
    return mean, low, high


def aggregate(
    table: pd.DataFrame,
    *,
    value: str = "normalised",
    metric: str | None = "logit_diff",
    by: list[str] | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per patch (and per metric or method): `quantity` (the column averaged), its mean over pairs, ci_low, ci_high, n_pairs.

    `metric` selects the metric of a sweep table (None keeps them all, one
    group each); attribution tables are grouped by their `method` instead.
    """
    if value not in table.columns:
        raise GenIRError(f"no column {value!r} to aggregate; columns are {', '.join(table.columns)}")
    if metric is not None and "metric" in table.columns:
        if metric not in set(table["metric"]):
            raise GenIRError(f"the table has no metric {metric!r} (it has {', '.join(sorted(set(table['metric'])))})")
        table = table[table["metric"] == metric]
    keys = list(by) if by is not None else [c for c in AXES + ["metric", "method"] if c in table.columns]
    # Missing axes (a component has no head) are real keys here, so groups are numbered with dropna=False.
    group = table.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    pair_code, pair_names = pd.factorize(table["pair_id"])
    matrix = np.full((group.max() + 1 if len(group) else 0, len(pair_names)), np.nan)
    matrix[group, pair_code] = table[value].to_numpy(dtype=float)
    mean, low, high = bootstrap_means(matrix, n_boot, ci, seed)
    out = table.iloc[np.unique(group, return_index=True)[1]][keys].reset_index(drop=True)
    for col in ("layer", "head", "position"):
        if col in out.columns:
            out[col] = out[col].astype("Int64")
    # which per-pair column was averaged; `value` is a number in every table, so the label has its own name
    out["quantity"] = value
    out["mean"], out["ci_low"], out["ci_high"] = mean, low, high
    out["n_pairs"] = (~np.isnan(matrix)).sum(1)
    return out
