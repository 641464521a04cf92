"""Attention recomputed from its weights: softmax(QK^T) from a saved residual, one family-neutral recipe.

    attn = gm.adapter.attention(Site("decoder", 3, "cross_attn"), batch)
    q = attn.query(resid_pre, positions=torch.tensor([-1]))   # (B, H, 1, d): the last row only, never T x T
    k, v = attn.keys_values(attn_source)                       # (B, H, T, d); GQA key/value heads repeated
    w = attn.weights(q, k, positions=torch.tensor([-1]))       # (B, H, 1, T), equal to the model's eager weights

The key source is the residual entering the sublayer for self-attention and
the encoder output for cross-attention (`attn.keys_from_residual` says
which). Families differ only in small hooks that a subclass overrides:
`_rotate` (RoPE on queries and keys) and `_position_bias` (T5's relative
position bias). Attribution (AtP* QK fix) and component reading use this
object, so neither knows which family it is looking at.
"""
from __future__ import annotations

from collections.abc import Callable

import torch


def query_positions(length: int, positions: torch.Tensor | None, device) -> torch.Tensor:
    """Query positions as non-negative indices into a sequence of `length` (None: every position)."""
    if positions is None:
        return torch.arange(length, device=device)
    return torch.as_tensor(positions, dtype=torch.long, device=device) % length


class Attention:
    """One attention sublayer as matrices: W_Q, W_K, W_V (optional biases), its input norm, scaling, masks."""

    def __init__(
        self,
        *,
        w_q: torch.Tensor,
        w_k: torch.Tensor,
        w_v: torch.Tensor,
        n_heads: int,
        d_head: int,
        norm: Callable[[torch.Tensor], torch.Tensor],
        scale: float,
        keys_from_residual: bool,
        key_mask: torch.Tensor | None = None,
        causal: bool = False,
        b_q: torch.Tensor | None = None,
        b_k: torch.Tensor | None = None,
        b_v: torch.Tensor | None = None,
    ):
        self.w_q, self.w_k, self.w_v = w_q, w_k, w_v
        self.b_q, self.b_k, self.b_v = b_q, b_k, b_v
        self.h, self.d = n_heads, d_head
        self.h_kv = w_k.shape[0] // d_head  # fewer than h under grouped-query attention
        self.norm, self.scale = norm, scale
        self.keys_from_residual = keys_from_residual
        self.key_mask = key_mask  # (B, T) 1 = real token, or None
        self.causal = causal

    # -- projections ---------------------------------------------------------------------------------
    def split(self, x: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """(..., T, heads*d) -> (..., heads, T, d)"""
        return x.unflatten(-1, (heads or self.h, self.d)).transpose(-2, -3)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H, T, d) -> (..., T, H*d), the layout the output projection reads."""
        return x.transpose(-2, -3).flatten(-2)

    @staticmethod
    def _linear(x, w, b):
        y = x @ w.T
        return y if b is None else y + b

    def query(self, resid_pre: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(..., T, D) residual entering the sublayer -> (..., H, Tq, d) queries of `positions` only (all when None)."""
        positions = query_positions(resid_pre.shape[-2], positions, resid_pre.device)
        return self.query_rows(resid_pre.index_select(-2, positions), positions)

    def query_rows(self, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(..., Tq, D) residual rows already cut at the (non-negative) sequence `positions` -> (..., H, Tq, d) queries.

        How a decoding loop gets the query of each new token without keeping the residual of the whole sequence.
        """
        return self._rotate(self.split(self._linear(self.norm(rows), self.w_q, self.b_q)), positions)

    def query_from_normed(self, normed: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Queries of already-normed inputs (..., Tq, D) at `positions`, without the bias: linear in `normed`, so it splits over parts."""
        return self._rotate(self.split(normed @ self.w_q.T), positions)

    def keys_values(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., T, D) key source -> keys and values (..., H, T, d), key/value heads repeated to H query heads."""
        x = self.norm(source) if self.keys_from_residual else source
        keys = self.split(self._linear(x, self.w_k, self.b_k), self.h_kv)
        values = self.split(self._linear(x, self.w_v, self.b_v), self.h_kv)
        keys = self._rotate(keys, torch.arange(source.shape[-2], device=source.device))
        return self.repeat_kv_heads(keys), self.repeat_kv_heads(values)

    def repeat_kv_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H_kv, T, d) keys or values (e.g. from a KV cache) -> (..., H, T, d), each shared by its group of query heads."""
        repeat = self.h // self.h_kv  # query heads per key/value head, consecutive as in HF's repeat_kv
        return x.repeat_interleave(repeat, dim=-3)

    # -- family hooks ----------------------------------------------------------------------------------
    def _rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotary position embedding of queries/keys (..., H, len(positions), d); none by default."""
        return x

    def _position_bias(self, positions: torch.Tensor, key_length: int) -> torch.Tensor | None:
        """Additive (H or 1, Tq, T) bias on the scores; none by default."""
        return None

    # -- scores and weights ----------------------------------------------------------------------------
    def scores(self, query: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-softmax scores (..., H, Tq, T): scaled q.k, position bias, padding and causal masks."""
        width = keys.shape[-2]
        # Positions place the query rows among the keys; only self-attention (causal mask, bias, RoPE) uses them.
        positions = torch.arange(query.shape[-2], device=keys.device) if positions is None else query_positions(width, positions, keys.device)
        scores = (query @ keys.transpose(-1, -2)) * self.scale
        bias = self._position_bias(positions, width)
        if bias is not None:
            scores = scores + bias
        low = torch.finfo(scores.dtype).min
        if self.key_mask is not None:
            # The additive padding mask as HuggingFace builds it: (B, 1, 1, T), broadcast over heads and queries.
            scores = scores + (1.0 - self.key_mask.to(scores.dtype))[:, None, None, :] * low
        if self.causal:
            future = torch.arange(width, device=keys.device)[None, :] > positions[:, None]  # (Tq, T)
            scores = scores.masked_fill(future, low)
        return scores

    def weights(self, query: torch.Tensor, keys: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (..., H, Tq, T), softmax in float32 as the eager implementations do."""
        return self.scores(query, keys, positions).float().softmax(-1).to(query.dtype)

    def heads(self, resid_pre: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(..., T, D) residual -> (..., H, Tq, d) per-head outputs (before the output projection)."""
        return self.weights(self.query(resid_pre, positions), keys, positions) @ values

    def heads_with_each_position_patched(self, resid_pre, keys, values, source_keys, source_values) -> torch.Tensor:
        """(P, p, H, Tq, d): the head outputs when the key and value at key position p alone come from the source.

        Only column p of the scores changes, so the softmax is recomputed
        exactly per p, and the value change enters as a rank-one correction.
        """
        query = self.query(resid_pre)
        width = keys.shape[-2]
        one_hot = torch.eye(width, dtype=torch.bool, device=keys.device)[None, :, None, None, :]  # (1, p, 1, 1, T)
        weights = torch.where(one_hot, self.scores(query, source_keys)[:, None], self.scores(query, keys)[:, None]).softmax(-1)  # (P, p, H, Tq, T)
        own = torch.diagonal(weights, dim1=1, dim2=-1).permute(0, 3, 1, 2)  # (P, p, H, Tq): weight on the patched position
        value_change = (source_values - values).transpose(1, 2)  # (P, p, H, d)
        return weights @ values[:, None] + own[..., None] * value_change[:, :, :, None, :]
