"""Turn labelled arrays into tidy result tables; sample queries and iterate them in padded batches.

    df = long_frame(values, {"query_id": ids, "layer": range(8), "component": kinds}, metric="ratio")  # values: (Q, L, K)
    for rows, batch in query_batches(gm, texts, batch_size=64): ...   # encoder already run on each batch
    queries = sample_queries(queries, 256, seed=0)                     # seeded, order kept

Every analysis in genir_mech.analyses returns long (tidy) frames with named
axes; this module is the one place that builds them from tensors.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..errors import GenIRError


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


def query_batches(gm, texts: list[str], batch_size: int = 64, encode: bool = True, progress: bool = False, desc: str = "queries") -> Iterator[tuple[slice, object]]:
    """Padded, masked batches of `texts`; with `encode` the encoder runs here, once per batch."""
    if not texts:
        raise GenIRError("empty query set: no queries to analyse (did the model get any validation query right?)")
    if batch_size < 1:
        raise GenIRError(f"batch size must be positive, got {batch_size}")
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        rows = slice(start, min(start + batch_size, len(texts)))
        batch = gm.batch(texts[rows])
        yield rows, gm.encode(batch) if encode else batch


def sample_queries(queries: list, n: int | None, seed: int = 0) -> list:
    """A seeded random sample of at most `n` queries, in their original order (all of them when n is None)."""
    if n is None or n >= len(queries):
        return list(queries)
    if n < 1:
        raise GenIRError(f"the number of queries to analyse must be positive, got {n}")
    keep = set(random.Random(seed).sample(range(len(queries)), n))
    return [q for i, q in enumerate(queries) if i in keep]


def cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Cosine similarity along the last axis, safe for zero vectors."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)
