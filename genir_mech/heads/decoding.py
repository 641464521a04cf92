"""Batched greedy decoding of a decoder-only model with a KV cache, optionally recording where every head looks at each step.

    out = greedy_decode(lm, batch, max_new_tokens=8)                        # uninstrumented: the floor
    out = greedy_decode(lm, batch, max_new_tokens=8, attention="recompute")  # + out.top_positions (B, steps, L, H)
    out = greedy_decode(lm, batch, max_new_tokens=8, attention="eager")      # the same from eager attention weights

The prompt (left-padded) is prefilled without its last token, so every
decoding step, including the first (the last prompt token), is a one-token
forward pass: each step needs exactly one attention row per head, and no
T x T matrix is built for the rows that matter. Two ways to get that row:

- "recompute": the residual entering each layer is saved at the step's
  position (one row), its query is rebuilt by the adapter's shared attention
  recompute (norm, W_Q, RoPE at the row's position) and scored against the
  keys the model itself just wrote to its KV cache (post-RoPE), softmax in
  float32 as eager attention does. Works under SDPA, so the forward pass
  runs at full speed.
- "eager": the model runs its eager attention on the step and returns the
  weights; only the one row per step exists.

Both give (B, H, 1, T) weights per layer; `top_positions` keeps the column of
the largest weight (the most-attended position, in padded coordinates).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import GenIRError
from ..models.adapters import module_at
from ..models.adapters.llama import position_ids
from ..models.components import Site
from ..models.execution import QueryBatch
from .query_reading import predicting_attention

ATTENTION_PATHS = ("recompute", "eager")


@dataclass
class Decoded:
    """Greedy continuations of a batch: tokens (B, steps), which steps are live, and optionally the argmax key per head.

    Built step by step with `step(logits)`, which returns the next input tokens, or None once every row has ended.
    """

    eos: int
    pad: int
    done: torch.Tensor  # (B,) bool: the row has produced its end-of-sequence token
    steps: list = dataclasses.field(default_factory=list)  # (token, live) per step
    tops: list = dataclasses.field(default_factory=list)  # (B, L, H) per step

    @classmethod
    def start(cls, tokenizer, rows: int, device) -> "Decoded":
        """An empty continuation of `rows` prompts."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(tokenizer.eos_token_id, pad, torch.zeros(rows, dtype=torch.bool, device=device))

    def step(self, logits: torch.Tensor) -> torch.Tensor | None:
        """Take the greedy token of each row from (B, vocab) logits (padding after a row's end); the (B, 1) next inputs, or None when all rows ended."""
        token = torch.where(self.done, torch.full_like(logits[:, 0], self.pad, dtype=torch.long), logits.argmax(-1))
        self.steps.append((token, ~self.done))
        self.done = self.done | (token == self.eos)
        return None if bool(self.done.all()) else token[:, None]

    @property
    def tokens(self) -> torch.Tensor:
        """(B, steps) generated tokens; padding after a row's end-of-sequence token."""
        return torch.stack([t for t, _ in self.steps], 1)

    @property
    def live(self) -> torch.Tensor:
        """(B, steps) bool: the step produced a real token (the end-of-sequence token included)."""
        return torch.stack([l for _, l in self.steps], 1)

    @property
    def top_positions(self) -> torch.Tensor | None:
        """(B, steps, L, H) column of each head's most-attended key per step (padded coordinates); None when not recorded."""
        return torch.stack(self.tops, 1) if self.tops else None

    def texts(self, tokenizer) -> list[str]:
        """The generated text of each row, without padding and the end-of-sequence token."""
        return [tokenizer.decode([t for t, ok in zip(row.tolist(), live.tolist()) if ok and t != self.eos]) for row, live in zip(self.tokens, self.live)]


def eager_available(gm) -> bool:
    """Whether the model can run eager attention (which returns attention weights)."""
    current = gm.hf_model.config._attn_implementation
    try:
        gm.hf_model.set_attn_implementation("eager")
    except (ValueError, ImportError, NotImplementedError):
        return False
    gm.hf_model.set_attn_implementation(current)
    return True


def recompute_available(gm) -> bool:
    """Whether the adapter can rebuild the model's self-attention from its weights."""
    try:
        gm.adapter.attention(Site("decoder", 0, "self_attn"), None)
    except (GenIRError, NotImplementedError, AttributeError):
        return False
    return True


def resolve_attention_path(gm, path: str) -> str:
    """"auto" -> "recompute" when the adapter can rebuild attention, else "eager"; GenIRError when neither works."""
    if path not in ("auto", *ATTENTION_PATHS):
        raise GenIRError(f"attention path {path!r}: expected auto, {', '.join(ATTENTION_PATHS)}")
    if path in ("auto", "recompute") and recompute_available(gm):
        return "recompute"
    if path in ("auto", "eager") and eager_available(gm):
        return "eager"
    raise GenIRError(
        f"{gm.path}: no attention weights available: the model cannot run eager attention "
        f"(implementation {gm.hf_model.config._attn_implementation!r}) and the {gm.adapter.family} adapter has no recompute path"
        + ("" if path == "auto" else f" (asked for {path!r})")
    )


class _StepRecorder:
    """Hooks that collect one attention row per head and layer during a one-token decoding step."""

    def __init__(self, gm, path: str):
        self.gm, self.path = gm, path
        self.layers = gm.n_layers("decoder")
        self.rows: dict[int, torch.Tensor] = {}  # layer -> (B, 1, D) residual entering it (recompute) or (B, H, 1, T) weights (eager)
        self.handles = []
        for layer in range(self.layers):
            if path == "recompute":
                hook = gm.adapter.hook(Site("decoder", layer, "self_attn", "resid_pre"))
                module = module_at(gm.hf_model, hook.path)
                self.handles.append(module.register_forward_pre_hook(self._save_residual(layer), with_kwargs=True))
            else:
                hook = gm.adapter.hook(Site("decoder", layer, "self_attn"))
                module = module_at(gm.hf_model, hook.path)
                self.handles.append(module.register_forward_hook(self._save_weights(layer)))

    def _save_residual(self, layer):
        def save(module, args, kwargs):
            self.rows[layer] = (args[0] if args else kwargs["hidden_states"]).detach()
        return save

    def _save_weights(self, layer):
        def save(module, args, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise GenIRError(f"{self.gm.path}: layer {layer}'s attention returned no weights under eager attention")
            self.rows[layer] = weights.detach()
        return save

    def remove(self):
        for h in self.handles:
            h.remove()

    def top_positions(self, mask: torch.Tensor, cache) -> torch.Tensor:
        """(B, L, H) column of each head's largest attention weight for this step's row."""
        tops = []
        for layer in range(self.layers):
            if self.path == "eager":
                weights = self.rows[layer][:, :, -1]
            else:
                site = Site("decoder", layer, "self_attn")
                step = QueryBatch(mask, mask)  # only the mask matters: positions and key padding of the row
                attn = self.gm.adapter.attention(site, step)
                where = torch.tensor([mask.shape[1] - 1], device=mask.device)
                query = attn.query_rows(self.rows[layer], where)
                keys = attn.repeat_kv_heads(cache.layers[layer].keys)
                weights = attn.weights(query, keys, where)[:, :, 0]
            tops.append(weights.argmax(-1))
        return torch.stack(tops, 1)


@torch.no_grad()
def greedy_decode(gm, batch: QueryBatch, max_new_tokens: int, attention: str | None = None) -> Decoded:
    """Greedy continuation of every prompt in `batch` for up to `max_new_tokens` tokens (see the module docstring).

    Example:
        >>> out = greedy_decode(lm, prompt_batch(lm, prompts), 8, attention="recompute")
        >>> out.texts(lm.tokenizer), out.top_positions.shape      # [...], (B, steps, L, H)
    """
    if max_new_tokens < 1:
        raise GenIRError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    gm.adapter.require("self_attn", analysis="greedy decoding")
    if "encoder" in gm.adapter.sides:
        raise GenIRError(f"{gm.path}: greedy decoding of prompts needs a decoder-only model")
    model = gm.hf_model
    ids, mask = batch.input_ids, batch.attention_mask
    path = None if attention is None else resolve_attention_path(gm, attention)
    implementation = model.config._attn_implementation
    cache = None
    if ids.shape[1] > 1:
        prefix = mask[:, :-1]
        out = model(input_ids=ids[:, :-1], attention_mask=prefix, position_ids=position_ids(prefix), use_cache=True, logits_to_keep=1)
        cache = out.cache
    current = ids[:, -1:]
    decoded = Decoded.start(gm.tokenizer, len(ids), ids.device)
    recorder = _StepRecorder(gm, path) if path else None
    if path == "eager":
        model.set_attn_implementation("eager")
    try:
        for _ in range(max_new_tokens):
            positions = position_ids(mask)[:, -1:]
            out = model(input_ids=current, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
            cache = out.cache
            if recorder is not None:
                decoded.tops.append(recorder.top_positions(mask, cache))
            current = decoded.step(out.logits[:, -1])
            if current is None:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    finally:
        if recorder is not None:
            recorder.remove()
        if path == "eager":
            model.set_attn_implementation(implementation)
    return decoded


@torch.no_grad()
def seq2seq_greedy_decode(gm, batch: QueryBatch, max_new_tokens: int, attention: bool = True) -> Decoded:
    """Greedy answer of an encoder-decoder model to prompts in its encoder; with `attention`, each cross-attention head's
    most-attended encoder column per step (`Decoded.top_positions`, padded encoder coordinates).

    Each step reruns the decoder on the tokens so far (answers are a few tokens; the encoder output is reused).
    The decoder starts from `batch.decoder_input_ids` when the batch has them (a NIAH lead-in prefix), else the start token.
    """
    if max_new_tokens < 1:
        raise GenIRError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    gm.adapter.require("encoder", "cross_attn", analysis="encoder-decoder greedy decoding")
    decoded = Decoded.start(gm.tokenizer, len(batch), batch.input_ids.device)
    dec = batch.decoder_input_ids if batch.decoder_input_ids is not None else gm.start_ids(len(batch))
    for _ in range(max_new_tokens):
        step = QueryBatch(batch.input_ids, batch.attention_mask, None, dec)
        if attention:
            weights, logits = predicting_attention(gm, step, with_logits=True)
            decoded.tops.append(weights.argmax(-1))
        else:
            logits = gm.logits(step)
        nxt = decoded.step(logits)
        if nxt is None:
            break
        dec = torch.cat([dec, nxt], 1)
    return decoded


def decode_answers(gm, batch: QueryBatch, max_new_tokens: int, attention: str | None = None) -> Decoded:
    """Greedy answers of either architecture: `greedy_decode` for a decoder-only model, `seq2seq_greedy_decode` (cross-attention rows) otherwise."""
    if "encoder" in gm.adapter.sides:
        return seq2seq_greedy_decode(gm, batch, max_new_tokens, attention=attention is not None)
    return greedy_decode(gm, batch, max_new_tokens, attention=attention)
