"""Cross-attention keys and values computed once per query, handed to HuggingFace as a filled cache.

    keys_values = adapter.cross_keys_values(encoder_hidden)     # per decoder layer: (keys, values), (B, H, T, d_head)
    kwargs["cache"] = filled_cross_cache(keys_values)           # layers that are None are skipped by the run

Every decoder layer's cross-attention keys and values are projections of the
encoder output alone. When many rows repeat one query (a patching sweep fans
each query out to hundreds of patches) they are the same for all of them, so
they are projected once per query and each row receives its query's copy.
HuggingFace's encoder-decoder cache reuses cross-attention keys and values of
a layer whose `is_updated` flag is set, as it does from the second generation
step on; the self-attention half starts empty, so the pass is the same
one-step forward as without a cache.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, EncoderDecoderCache


def _filled_layer(keys: torch.Tensor, values: torch.Tensor) -> DynamicLayer:
    layer = DynamicLayer()
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values  # set, not `update`d: update concatenates, a copy of every row's keys
    return layer


def filled_cross_cache(keys_values: Sequence[tuple[torch.Tensor, torch.Tensor] | None]) -> EncoderDecoderCache:
    """An encoder-decoder cache whose cross-attention half holds `keys_values` (None: a layer the run skips)."""
    cross = DynamicCache()
    cross.layers = [DynamicLayer() if kv is None else _filled_layer(*kv) for kv in keys_values]
    return EncoderDecoderCache(DynamicCache(), cross)  # is_updated is set for exactly the filled layers
