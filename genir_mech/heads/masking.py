"""Head masking that removes heads, through the one intervention engine, and NIAH accuracy under it.

    group = head_mask([(2, 1), (3, 0)], condition="top-k")      # zero those heads' outputs (before the output projection)
    out = masked_greedy_decode(lm, batch, 6, group)               # greedy decoding with the heads removed at every position
    table = masked_niah(lm, trials, {"top-k": top, "random-k": draws}, batch_size=8)

A masked head's slice of the attention output (the input of the output
projection) is zero at every position of every forward pass, prompt
included: the head contributes nothing to the residual stream, which is what
removal means (zero attention logits give uniform attention, not removal).
Each decoding step is a full forward pass through the `InterventionExecutor`
(no KV cache: the cache of an unmasked run would carry the heads' outputs).
"""
from __future__ import annotations

import random

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..data.niah import NiahTrial
from ..errors import GenIRError
from ..interventions import Intervention, InterventionExecutor, InterventionSpec
from ..models.execution import QueryBatch
from .decoding import Decoded
from .prompts import prompt_batch
from .retrieval_score import SUCCESS_RECALL, answer_budget, rouge1_recall

Head = tuple[int, int]  # (layer, head)


def head_mask(heads: list[Head], kind: str = "self_attn", **labels) -> Intervention:
    """An intervention that zeroes the outputs of `heads` (layer, head) of decoder `kind` attention at every position."""
    return Intervention(tuple(InterventionSpec(f"decoder.layers.{layer}.{kind}.heads", head=head, value="zero") for layer, head in heads), labels)


def random_heads(candidates: list[Head], k: int, draws: int, seed: int = 0) -> list[list[Head]]:
    """`draws` random sets of `k` heads from `candidates` (seeded); GenIRError when there are fewer than k."""
    if k > len(candidates):
        raise GenIRError(f"cannot draw {k} random heads from {len(candidates)} non-retrieval heads; lower top_k")
    rng = random.Random(seed)
    return [sorted(rng.sample(sorted(candidates), k)) for _ in range(draws)]


@torch.no_grad()
def masked_greedy_decode(gm, batch: QueryBatch, max_new_tokens: int, intervention: Intervention, rows_per_forward: int = 64) -> Decoded:
    """Greedy decoding with `intervention` applied to every forward pass (prompt included); see `decoding.Decoded`.

    An encoder-decoder model keeps the prompt in its encoder and grows its decoder inputs from the batch's
    `decoder_input_ids` (a NIAH lead-in prefix) or else the start token.
    """
    executor = InterventionExecutor(gm, [intervention], rows_per_forward=rows_per_forward)
    ids, mask = batch.input_ids, batch.attention_mask
    seq2seq = "encoder" in gm.adapter.sides
    dec = (batch.decoder_input_ids if batch.decoder_input_ids is not None else gm.start_ids(len(ids))) if seq2seq else None
    decoded = Decoded.start(gm.tokenizer, len(ids), ids.device)
    for _ in range(max_new_tokens):
        logits = torch.empty(len(ids), gm.hf_model.config.vocab_size, device=ids.device)
        for out in executor.row_logits(QueryBatch(ids, mask, None, dec)):
            logits[out.item.to(ids.device)] = out.logits.float()
        nxt = decoded.step(logits)
        if nxt is None:
            break
        if seq2seq:
            dec = torch.cat([dec, nxt], 1)
        else:
            ids = torch.cat([ids, nxt], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return decoded


def masked_niah(gm, trials: list[NiahTrial], conditions: dict[str, list[list[Head]]], batch_size: int = 8, progress: bool = True,
                kind: str = "self_attn") -> pd.DataFrame:
    """NIAH outcomes per trial with each head set masked: condition, draw, n_masked, trial_id, context_length, depth, generated, rouge1_recall, success."""
    if not trials:
        raise GenIRError("no needle-in-a-haystack trials to mask")
    budget = answer_budget(gm.tokenizer, trials)
    order = sorted(range(len(trials)), key=lambda i: len(trials[i].prompt))
    jobs = [(name, draw, heads) for name, sets in conditions.items() for draw, heads in enumerate(sets)]
    rows = []
    bar = tqdm(total=len(jobs) * len(trials), desc="masked NIAH", unit="trial", disable=not progress, leave=False)
    for name, draw, heads in jobs:
        group = head_mask(heads, kind, condition=name, draw=draw)
        for start in range(0, len(order), batch_size):
            chunk = [trials[i] for i in order[start:start + batch_size]]
            batch = prompt_batch(gm, [t.prompt for t in chunk], reserve=budget, names=[t.trial_id for t in chunk])
            decoded = masked_greedy_decode(gm, batch, budget, group, rows_per_forward=batch_size)
            for trial, text in zip(chunk, decoded.texts(gm.tokenizer)):
                recall = rouge1_recall(trial.answer, text)
                rows.append({"condition": name, "draw": draw, "n_masked": len(heads), "heads": " ".join(f"L{l}H{h}" for l, h in heads),
                             "trial_id": trial.trial_id, "context_length": trial.context_length, "depth": trial.depth,
                             "generated": text, "rouge1_recall": recall, "success": recall > SUCCESS_RECALL})
            bar.update(len(chunk))
    bar.close()
    return pd.DataFrame(rows)
