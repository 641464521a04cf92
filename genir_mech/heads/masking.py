"""Head masking, two ways, and NIAH accuracy under it.

    logits = masked_logits(lm, batch, [(2, 1), (3, 0)], mask="uniform")    # the heads attend uniformly (Wu et al.'s masking)
    logits = masked_logits(lm, batch, [(2, 1), (3, 0)], mask="remove")     # the heads' outputs are zero
    out = masked_greedy_decode(lm, batch, 6, [(2, 1)], mask="uniform")      # greedy decoding with the heads masked
    control = random_control(ranked, retrieval, k=2, draws=10, seed=0)       # top-k, and 10 independent seeded draws of k others
    table = masked_niah(lm, trials, {"top-k": [control.top], "random-k": control.draws}, mask="uniform")

Two maskings, named in every table that uses them (`MASKS`):

- "uniform" (the default, Wu et al.'s): the head's query is zero, so every
  score is zero and its softmax is uniform over the positions it may see
  (causal and padding masks respected; a family's additive position bias,
  T5's relative bias, is all that is left). The head still writes, to the
  residual, the mean of its values. The reference code zeroes the query
  states (or the pre-softmax scores) inside its patched attention; here the
  head's slice of the attention output (the input of the output projection,
  the same hook point as "remove") is replaced by the output of that uniform
  attention, recomputed by the adapter's attention recipe (its values from
  the residual entering the sublayer, or from the encoder output for
  cross-attention), in a forward pre-hook.
- "remove": the head's slice of the attention output is zero, through the
  `InterventionExecutor` (a `.heads` site with value "zero"): the head writes
  nothing. A stronger intervention than uniform attention.

Both apply at every position of every forward pass, prompt included (the
reference masks only the decoding steps, after an unmasked prefill). Each
decoding step is a full forward pass without a KV cache (the cache of an
unmasked run would carry the heads' outputs).
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from math import comb

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.niah import NiahTrial
from ..errors import GenIRError
from ..interventions import Intervention, InterventionExecutor, InterventionSpec
from ..models.adapters import module_at
from ..models.components import Site
from ..models.execution import QueryBatch
from .decoding import Decoded
from .prompts import prompt_batch
from .retrieval_score import SUCCESS_RECALL, answer_budget, rouge1_recall

Head = tuple[int, int]  # (layer, head)
MASKS = ("uniform", "remove")
DEFAULT_MASK = "uniform"  # Wu et al.'s masking: the head attends uniformly
SCORE_ELEMENTS = 2 ** 24  # attention scores held at once by the uniform masking (query rows are cut to fit)


def check_mask(mask: str) -> str:
    """`mask` if it is one of MASKS, else a one-line GenIRError."""
    if mask not in MASKS:
        raise GenIRError(f"mask {mask!r}: expected one of {', '.join(MASKS)} (uniform: the head attends uniformly, Wu et al.'s masking; "
                         "remove: the head's output is zero)")
    return mask


def head_label(heads) -> str:
    """"L2H1 L3H0": a head set as it is written in tables."""
    return " ".join(f"L{l}H{h}" for l, h in heads)


def head_mask(heads: list[Head], kind: str = "self_attn", **labels) -> Intervention:
    """An intervention that zeroes the outputs of `heads` (layer, head) of decoder `kind` attention at every position ("remove")."""
    return Intervention(tuple(InterventionSpec(f"decoder.layers.{layer}.{kind}.heads", head=head, value="zero") for layer, head in heads), labels)


def random_heads(candidates: list[Head], k: int, draws: int, seed: int = 0) -> list[list[Head]]:
    """`draws` independent random sets of `k` heads from `candidates` (one seeded generator); GenIRError when there are fewer than k.

    Independent draws may repeat a set when there are few possible sets (`possible_sets`); `distinct_sets` counts them.
    """
    if k > len(candidates):
        raise GenIRError(f"cannot draw {k} random heads from {len(candidates)} candidate heads; lower top_k")
    rng = random.Random(seed)
    return [sorted(rng.sample(sorted(candidates), k)) for _ in range(draws)]


def possible_sets(n_candidates: int, k: int) -> int:
    """How many different sets of k heads `n_candidates` heads hold."""
    return comb(n_candidates, k)


def distinct_sets(draws: list[list[Head]]) -> int:
    """How many different head sets a list of draws holds."""
    return len({tuple(sorted(d)) for d in draws})


def default_top_k(n_heads: int, n_retrieval: int) -> int:
    """Heads masked by default: every retrieval head, but no more than half the heads left to draw random sets from
    (k random heads then come from at least 2k candidates), and at least 1."""
    return max(1, min(n_retrieval, (n_heads - max(1, n_retrieval)) // 2))


@dataclass
class RandomControl:
    """The top-k heads and `len(draws)` independent random sets of k heads from `candidates` (neither top nor excluded heads).

    Example:
        >>> control = random_control(ranked, retrieval, k=2, draws=10, seed=0)
        >>> control.distinct, control.possible, control.note()    # distinct sets drawn, sets there are, a warning when few
    """

    k: int
    top: list[Head]
    candidates: list[Head]
    draws: list[list[Head]]

    @property
    def distinct(self) -> int:
        return distinct_sets(self.draws)

    @property
    def possible(self) -> int:
        return possible_sets(len(self.candidates), self.k)

    def note(self) -> str | None:
        """Why the random-k control is weak here (too few candidates for distinct draws), or None."""
        n = len(self.candidates)
        if n < self.k:
            return f"only {n} candidate heads for random sets of {self.k}: no random-k control"
        if self.possible == 1:
            return f"the {n} candidate heads hold one set of {self.k}: every random-k draw is that set, which is not a random control"
        if self.distinct < len(self.draws):
            return (f"{self.possible} possible sets of {self.k} among {n} candidate heads: the {len(self.draws)} independent draws hold "
                    f"{self.distinct} distinct sets; random-k varies over few sets")
        return None

    def record(self) -> dict:
        """The control as JSON-ready fields (a `random_k_note` only when `note` has one)."""
        out = {"top_k": self.k, "masked_heads": head_label(self.top).split(), "random_candidates": len(self.candidates),
               "random_draws": len(self.draws), "random_draws_distinct": self.distinct, "random_sets_possible": self.possible}
        note = self.note()
        return {**out, "random_k_note": note} if note else out


def random_control(ranked: list[Head], excluded: list[Head], k: int, draws: int, seed: int = 0) -> RandomControl:
    """The top `k` of `ranked` and `draws` random sets of k from the heads neither in the top k nor `excluded` (see RandomControl)."""
    top = list(ranked[:k])
    skip = set(top) | set(excluded)
    candidates = [h for h in ranked if h not in skip]
    return RandomControl(k, top, candidates, random_heads(candidates, k, draws, seed) if len(candidates) >= k else [])


# -- uniform attention ------------------------------------------------------------------------------


def _module_input(args, kwargs, name: str):
    return args[0] if args else kwargs[name]


class _UniformHeads:
    """Forward hooks on the raw HuggingFace modules that make `heads` of decoder `kind` attention attend uniformly (see the module docstring)."""

    def __init__(self, gm, heads: list[Head], kind: str, batch: QueryBatch):
        self.handles = []
        by_layer: dict[int, list[int]] = defaultdict(list)
        for layer, head in heads:
            by_layer[layer].append(head)
        d = gm.adapter.d_head
        for layer, chosen in sorted(by_layer.items()):
            site = Site("decoder", layer, kind)
            gm.adapter.validate(site)
            attn = gm.adapter.attention(site, batch)
            state: dict[str, torch.Tensor] = {}
            if attn.keys_from_residual:
                hook = gm.adapter.hook(site.with_facet("resid_pre"))
                module = module_at(gm.hf_model, hook.path)
                if hook.io == "input":
                    self.handles.append(module.register_forward_pre_hook(self._save_input(state), with_kwargs=True))
                else:
                    self.handles.append(module.register_forward_hook(self._save_output(state, hook.index)))
            elif batch.encoder_hidden is None:
                raise GenIRError("uniform masking of cross-attention heads needs the encoder output (an encoded batch)")
            else:
                state["source"] = batch.encoder_hidden
            hook = gm.adapter.hook(site.with_facet("heads"))
            module = module_at(gm.hf_model, hook.path)
            columns = torch.cat([torch.arange(h * d, (h + 1) * d) for h in chosen])
            self.handles.append(module.register_forward_pre_hook(self._uniform(attn, torch.tensor(chosen), columns, state), with_kwargs=True))

    @staticmethod
    def _save_input(state):
        def save(module, args, kwargs):
            state["source"] = _module_input(args, kwargs, "hidden_states")
        return save

    @staticmethod
    def _save_output(state, index):
        def save(module, args, output):
            state["source"] = output if index is None else output[index]
        return save

    @staticmethod
    def _uniform(attn, chosen: torch.Tensor, columns: torch.Tensor, state):
        def replace(module, args, kwargs):
            x = _module_input(args, kwargs, "input")
            keys, values = attn.keys_values(state["source"])  # (B, H, Tk, d)
            b, h, width, d = keys.shape
            length = x.shape[-2]
            chosen_ = chosen.to(keys.device)
            step = max(1, SCORE_ELEMENTS // max(1, b * h * width))
            parts = []
            for start in range(0, length, step):
                stop = min(length, start + step)
                # Self-attention: the rows sit at their own positions (causal mask, position bias); cross-attention has neither.
                positions = torch.arange(start, stop, device=keys.device) if attn.causal else None
                weights = attn.weights(keys.new_zeros(b, h, stop - start, d), keys, positions)  # a zero query: softmax of the masks alone
                parts.append(weights.index_select(1, chosen_) @ values.index_select(1, chosen_))  # (B, h_chosen, rows, d)
            out = torch.cat(parts, 2).transpose(1, 2).flatten(2)  # (B, T, h_chosen * d), heads in `chosen` order
            x = x.clone()
            x[..., columns.to(x.device)] = out.to(x.dtype)
            if args:
                return (x, *args[1:]), kwargs
            return args, {**kwargs, "input": x}
        return replace

    def remove(self):
        for handle in self.handles:
            handle.remove()


@contextmanager
def uniform_attention(gm, heads: list[Head], kind: str, batch: QueryBatch):
    """Within the block, forward passes of `gm.hf_model` on `batch` run with `heads` attending uniformly.

    Example:
        >>> with uniform_attention(lm, [(1, 2)], "self_attn", batch):
        ...     logits = lm.logits(batch)

    The hooks are built for `batch` (its masks and, for cross-attention, its encoder output): use them for that batch only.
    """
    hooks = _UniformHeads(gm, heads, kind, batch)
    try:
        yield
    finally:
        hooks.remove()


# -- masked forward passes and decoding -------------------------------------------------------------


def _encoded(gm, batch: QueryBatch) -> QueryBatch:
    """The batch with its encoder output (cross-attention values come from it); a decoder-only batch unchanged."""
    return gm.encode(batch) if "encoder" in gm.adapter.sides and batch.encoder_hidden is None else batch


@torch.no_grad()
def masked_set_values(gm, batch: QueryBatch, sets: list[list[Head]], reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      mask: str = DEFAULT_MASK, kind: str = "self_attn", rows_per_forward: int | None = 64) -> torch.Tensor:
    """(len(sets), B) `reduce(logits, items)` of the last position of `batch` with each head set masked (`mask`).

    `reduce` maps (rows, vocab) float logits and the rows' indices into `batch` to (rows,) values (a metric, a rank).
    "remove" runs every set in row-batched passes of the `InterventionExecutor`; "uniform" runs one hooked pass per set.
    """
    check_mask(mask)
    out = torch.full((len(sets), len(batch)), float("nan"))
    if mask == "remove":
        executor = InterventionExecutor(gm, [head_mask(s, kind) for s in sets], rows_per_forward=rows_per_forward)
        for chunk in executor.row_logits(batch):
            out[chunk.intervention, chunk.item] = reduce(chunk.logits.float(), chunk.item).float().cpu()
        return out
    batch = _encoded(gm, batch)
    items = torch.arange(len(batch))
    for i, heads in enumerate(sets):
        with uniform_attention(gm, heads, kind, batch):
            logits = gm.logits(batch)
        out[i] = reduce(logits.float(), items).float().cpu()
    return out


def masked_logits(gm, batch: QueryBatch, heads: list[Head], mask: str = DEFAULT_MASK, kind: str = "self_attn", rows_per_forward: int | None = 64) -> torch.Tensor:
    """(B, vocab) logits of the last position of `batch` with `heads` masked (`mask`: uniform or remove)."""
    check_mask(mask)
    if mask == "uniform":
        batch = _encoded(gm, batch)
        with uniform_attention(gm, heads, kind, batch), torch.no_grad():
            return gm.logits(batch).float()
    logits = None
    for out in InterventionExecutor(gm, [head_mask(heads, kind)], rows_per_forward=rows_per_forward).row_logits(batch):
        if logits is None:
            logits = torch.empty(len(batch), out.logits.shape[-1], device=out.logits.device)
        logits[out.item.to(logits.device)] = out.logits.float()
    return logits


@torch.no_grad()
def masked_greedy_decode(gm, batch: QueryBatch, max_new_tokens: int, heads: list[Head], mask: str = DEFAULT_MASK, kind: str = "self_attn",
                         rows_per_forward: int = 64) -> Decoded:
    """Greedy decoding with `heads` masked (`mask`) in every forward pass, prompt included; see `decoding.Decoded`.

    An encoder-decoder model keeps the prompt in its encoder (run once) and grows its decoder inputs from the batch's
    `decoder_input_ids` (a NIAH lead-in prefix) or else the start token.
    """
    check_mask(mask)
    seq2seq = "encoder" in gm.adapter.sides
    if seq2seq:
        batch = gm.encode(QueryBatch(batch.input_ids, batch.attention_mask, None, batch.decoder_input_ids))
    ids, attention = batch.input_ids, batch.attention_mask
    dec = (batch.decoder_input_ids if batch.decoder_input_ids is not None else gm.start_ids(len(ids))) if seq2seq else None
    decoded = Decoded.start(gm.tokenizer, len(ids), ids.device)
    for _ in range(max_new_tokens):
        step = QueryBatch(ids, attention, batch.encoder_hidden, dec)
        nxt = decoded.step(masked_logits(gm, step, heads, mask, kind, rows_per_forward))
        if nxt is None:
            break
        if seq2seq:
            dec = torch.cat([dec, nxt], 1)
        else:
            ids = torch.cat([ids, nxt], 1)
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
    return decoded


def masked_niah(gm, trials: list[NiahTrial], conditions: dict[str, list[list[Head]]], batch_size: int = 8, progress: bool = True,
                kind: str = "self_attn", mask: str = DEFAULT_MASK) -> pd.DataFrame:
    """NIAH outcomes per trial with each head set masked: mask, condition, draw, n_masked, heads, trial_id, context_length, depth,
    generated, rouge1_recall, success. A head set drawn more than once is decoded once (its rows are repeated per draw)."""
    check_mask(mask)
    if not trials:
        raise GenIRError("no needle-in-a-haystack trials to mask")
    budget = answer_budget(gm.tokenizer, trials)
    order = sorted(range(len(trials)), key=lambda i: len(trials[i].prompt))
    jobs = [(name, draw, sorted(heads)) for name, sets in conditions.items() for draw, heads in enumerate(sets)]
    unique = list(dict.fromkeys(tuple(heads) for *_, heads in jobs))
    outcomes: dict[tuple, list[str]] = {}
    bar = tqdm(total=len(unique) * len(trials), desc=f"masked NIAH ({mask})", unit="trial", disable=not progress, leave=False)
    for heads in unique:
        texts = [""] * len(trials)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            chunk = [trials[i] for i in rows]
            batch = prompt_batch(gm, [t.prompt for t in chunk], reserve=budget, names=[t.trial_id for t in chunk])
            decoded = masked_greedy_decode(gm, batch, budget, list(heads), mask, kind, rows_per_forward=batch_size)
            for index, text in zip(rows, decoded.texts(gm.tokenizer)):
                texts[index] = text
            bar.update(len(chunk))
        outcomes[heads] = texts
    bar.close()
    rows = []
    for name, draw, heads in jobs:
        for trial, text in zip(trials, outcomes[tuple(heads)]):
            recall = rouge1_recall(trial.answer, text)
            rows.append({"mask": mask, "condition": name, "draw": draw, "n_masked": len(heads), "heads": head_label(heads),
                         "trial_id": trial.trial_id, "context_length": trial.context_length, "depth": trial.depth,
                         "generated": text, "rouge1_recall": recall, "success": recall > SUCCESS_RECALL})
    return pd.DataFrame(rows)
