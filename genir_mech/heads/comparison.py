"""Statistics that set the per-head scores of several models side by side (pure tables in, numbers out; no model runs).

    sparsity(scores)                           # fraction of heads above the retrieval, QR and causal thresholds
    effect_shares(set_effects)                 # logit difference lost when the top-k heads vs k random heads are masked together (CI)
    mean_ci(draws)                             # mean of independent random draws and its 95% interval
    spearman_ci(x, y, resamples=1000)          # rank correlation with a bootstrap interval over heads
    depth_centre(scores, "patch_effect")       # effect-weighted mean relative depth of the heads

`scores` is one model's per-head table: layer, head, rel_depth, attention_score
(the score an attention-based detector ranks heads by: Wu et al.'s retrieval
score for NIAH models, the QR score for GenIR models), qr_score,
retrieval_score (NIAH only), patch_effect, ablation_effect. The causal effect
of a head is |patch_effect|: how much of the clean-vs-corrupted logit
difference its output alone carries. Single-head effects are not additive, so
the effect of a set of heads is never their sum: `set_effects` holds the
share of the logit difference lost when each set is masked together
(heads.model_scores).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .retrieval_score import RETRIEVAL_THRESHOLD

QR_THRESHOLD = 0.1  # calibrated attention mass on the deciding tokens: 10 points above the content-free query
CAUSAL_THRESHOLD = 0.1  # a head whose output alone restores 10% of the logit difference
CI_LEVEL = 0.95


def mean_ci(values, level: float = CI_LEVEL, bounds: tuple[float, float] | None = None) -> tuple[float, list[float]]:
    """Mean of independent draws and the t-interval of that mean at `level` (NaN for fewer than two finite values),
    clipped to `bounds` (the range of the quantity, e.g. (0, 1) for an accuracy).

    Example:
        >>> mean_ci([0.7, 0.8, 0.75, 0.8])        # (0.7625, [0.69..., 0.83...])
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), [float("nan"), float("nan")]
    mean = float(x.mean())
    if len(x) < 2:
        return mean, [float("nan"), float("nan")]
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, [low, high]


def relative_depth(layer, n_layers: int):
    """Layer centre as a fraction of the decoder's depth, (layer + 0.5) / n_layers: comparable across depths."""
    return (np.asarray(layer, dtype=float) + 0.5) / n_layers


def causal_effect(scores: pd.DataFrame) -> np.ndarray:
    """|patch_effect| per head (NaN as 0: a head that moved nothing)."""
    return np.nan_to_num(scores["patch_effect"].to_numpy(dtype=float)).__abs__()


def sparsity(scores: pd.DataFrame) -> dict:
    """Fraction of heads above each threshold (retrieval score only when the table has it)."""
    out = {"qr": float((scores["qr_score"] >= QR_THRESHOLD).mean()), "causal": float((causal_effect(scores) >= CAUSAL_THRESHOLD).mean())}
    if "retrieval_score" in scores and scores["retrieval_score"].notna().any():
        out["retrieval"] = float((scores["retrieval_score"] >= RETRIEVAL_THRESHOLD).mean())
    return out


def default_k(scores: pd.DataFrame) -> int:
    """Heads to compare: those above the attention threshold of the model's detector, at least 1, at most a quarter of the heads
    (so that k random heads are drawn from at least three times as many others, and their share varies over draws)."""
    threshold = RETRIEVAL_THRESHOLD if scores.get("detector", pd.Series(["qr"])).iloc[0] == "retrieval" else QR_THRESHOLD
    above = int((scores["attention_score"] >= threshold).sum())
    return max(1, min(above, len(scores) // 4))


def top_heads(scores: pd.DataFrame, k: int, by: str = "attention_score") -> list[tuple[int, int]]:
    """The k heads with the highest `by` (ties: lower layer, then head, first)."""
    order = scores.sort_values([by, "layer", "head"], ascending=[False, True, True], na_position="last")
    return [(int(l), int(h)) for l, h in zip(order["layer"][:k], order["head"][:k])]


def effect_shares(set_effects: pd.DataFrame) -> dict:
    """The joint masking effect (share of the clean-vs-corrupted logit difference lost when a set is masked together) of the
    top-k heads by attention score, of the top-k by single-head effect, of every head, and of k random other heads: the
    mean over the independent draws with its 95% interval, the number of draws and of distinct sets among them."""
    frame = set_effects.set_index("set")
    one = lambda name: float(frame.loc[name, "effect"]) if name in frame.index else float("nan")  # noqa: E731
    random = set_effects[set_effects["set"] == "random-k"]
    mean, ci = mean_ci(random["effect"].to_numpy()) if len(random) else (float("nan"), [float("nan"), float("nan")])
    top = frame.loc["top-k"]
    return {"mask": str(set_effects["mask"].iloc[0]), "k": int(top["k"]), "topk_heads": str(top["heads"]).split(),
            "topk_effect_share": one("top-k"), "top_single_k_effect_share": one("top-k by single effect"),
            "top_single_k_heads": str(frame.loc["top-k by single effect", "heads"]).split() if "top-k by single effect" in frame.index else [],
            "all_heads_effect_share": one("all heads"),
            "random_k_effect_share": mean, "random_k_effect_share_ci": ci, "draws": int(len(random)),
            "random_draws_distinct": int(random["heads"].nunique())}


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_ci(x, y, resamples: int = 1000, seed: int = 0) -> dict:
    """Spearman's rho of x and y (per head) with a percentile bootstrap interval over heads; NaN where a score is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return {"rho": float("nan"), "ci": [float("nan"), float("nan")], "n_heads": int(len(x))}
    rng = np.random.default_rng(seed)
    boot = np.array([_spearman(x[rows], y[rows]) for rows in rng.integers(0, len(x), (resamples, len(x)))])
    low, high = np.nanquantile(boot, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2]) if np.isfinite(boot).any() else (np.nan, np.nan)
    return {"rho": _spearman(x, y), "ci": [float(low), float(high)], "n_heads": int(len(x))}


def depth_centre(scores: pd.DataFrame, column: str = "patch_effect") -> float:
    """Mean relative depth of the heads weighted by |column| (where the effect sits); NaN when every weight is 0."""
    weight = np.nan_to_num(scores[column].to_numpy(dtype=float)).__abs__()
    return float((weight * scores["rel_depth"].to_numpy()).sum() / weight.sum()) if weight.sum() > 0 else float("nan")


def depth_profile(scores: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per layer: rel_depth, stage and the mean of each score over its heads (tidy: layer, rel_depth, stage, score, value)."""
    present = [c for c in columns if c in scores and scores[c].notna().any()]
    means = scores.groupby(["layer", "rel_depth", "stage"], dropna=False)[present].mean().reset_index()
    return means.melt(id_vars=["layer", "rel_depth", "stage"], value_vars=present, var_name="score", value_name="value")
