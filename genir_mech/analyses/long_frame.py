"""Tidy result tables from labelled arrays: the one place analyses turn tensors into long frames.

    df = long_frame(values, {"query_id": ids, "layer": range(n_layers), "component": kinds}, metric="ratio")  # values: (Q, L, K)

Every analysis in genir_mech.analyses returns long (tidy) frames whose
columns name their axes (layer, component, head, position, query_id, ...).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def long_frame(values, axes: dict, **constants) -> pd.DataFrame:
    """One row per cell of `values`; `axes` name its dimensions in order, with their labels;
    `constants` become columns with one value (e.g. metric="ratio")."""
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    labels = [list(v) for v in axes.values()]
    if array.shape != tuple(len(v) for v in labels):
        raise ValueError(f"values of shape {array.shape} do not match axes {dict(zip(axes, map(len, labels)))}")
    index = pd.MultiIndex.from_product(labels, names=list(axes))
    frame = index.to_frame(index=False)
    for name, value in constants.items():
        frame[name] = value
    frame["value"] = array.reshape(-1).astype(float)
    return frame
