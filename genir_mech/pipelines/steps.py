"""Query pipelines at decoding steps of a multi-token docid: the same measurement per step, one table with a `step` column.

    steps = resolve_steps(gm, config.steps)                 # "all" -> 0 .. docid length - 1; a step too far: one line
    frames = per_step(inputs, steps, lambda texts, qids, docs, view: {"contributions": contributions(gm, texts, qids, view=view)})

At step t each query is teacher-forced to its target docid's prefix s[:t]
(retrieval.steps.step_view); a query whose docid ends before step t is left
out of that step.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable

import pandas as pd

from ..errors import GenIRError
from ..retrieval.steps import covering, step_view

Measure = Callable[[list[str], list[str], list[str], object], dict[str, pd.DataFrame]]


def with_step(df: pd.DataFrame, step: int) -> pd.DataFrame:
    """`df` with a leading `step` column (the decoding step its rows were measured at)."""
    return df.assign(step=step)[["step", *df.columns]]


def per_step(inputs, steps: list[int], measure: Measure) -> dict[str, pd.DataFrame]:
    """`measure(texts, query_ids, docs, view)` at every step, its tables concatenated with a step column.

    A step none of the queries' docids reaches (short docids, e.g. one-digit naive ids) is left out with a warning
    naming it; GenIRError when that leaves no step."""
    parts: dict[str, list[pd.DataFrame]] = {}
    empty = [s for s in steps if not covering(inputs.model, inputs.relevant_docs, s)]
    if empty:
        message = (f"{inputs.model.path}: none of the {len(inputs.relevant_docs)} queries' target docids has a token at step(s) "
                   f"{', '.join(map(str, empty))}")
        if len(empty) == len(steps):
            raise GenIRError(message + "; nothing to analyse")
        warnings.warn(message + "; those steps are left out", stacklevel=2)
    for step in [s for s in steps if s not in empty]:
        view = step_view(inputs.model, inputs.relevant_docs, step)
        pick = lambda values: [values[i] for i in view.rows]  # noqa: E731
        for name, df in measure(pick(inputs.texts), pick(inputs.query_ids), pick(inputs.relevant_docs), view).items():
            parts.setdefault(name, []).append(with_step(df, step))
    return {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
