"""Long prompts of a decoder-only model as batches, and where a piece of the prompt (a needle, a document, the query) lies in tokens.

    batch = prompt_batch(lm, prompts)                     # left-padded, never truncated; refuses prompts past the model's positions
                                                          # (an encoder-decoder's prompt, for its encoder, ends in </s>;
                                                          # a NIAH seq2seq model's lead-in goes to the decoder: see below)
    start, end = token_span(lm.tokenizer, prompt, needle, what="needle")   # [start, end) over the unpadded prompt tokens
    offsets = pad_offsets(batch)                          # (B,) padding columns in front of each row

`GenIRModel.batch` truncates queries at 64 tokens (ranking queries are short);
haystacks are hundreds to thousands of tokens, so this module tokenizes them
without truncation and checks them against the model's position limit
instead. Spans come from the tokenizer's character offsets: a piece "tokenizes
differently inside the prompt" when a token straddles its boundary (the
model then never sees the piece's own tokens), which the retrieval score
cannot handle, so it is refused with the prompt named.

An encoder-decoder NIAH checkpoint whose card's `prompt_format` has a
`decoder_prefix` was trained (training.lm_objectives.encode_seq2seq_example)
with the encoder reading the prompt up to "answer :" plus </s> and the
decoder reading its start token then the needle's lead-in ("the access code
of <entity> is"); the first code word is predicted at the lead-in's last
token. `prompt_batch` rebuilds exactly that split (`decoder_input_ids`), so
the predicting position of every heads analysis is that last prefix token.
"""
from __future__ import annotations

import torch

from ..data.niah import split_lead_in
from ..errors import GenIRError
from ..models.execution import QueryBatch
from ..models.model_card import ModelCard


def max_positions(gm) -> int | None:
    """The longest sequence the model's position embeddings allow (None when the config sets no limit)."""
    config = gm.hf_model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt as the model reads it: no special tokens appended (the answer follows the prompt)."""
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def lead_in_to_decoder(gm) -> bool:
    """Whether `gm` is an encoder-decoder trained with the NIAH lead-in as its decoder prefix (its card's prompt_format has `decoder_prefix`)."""
    if "encoder" not in gm.adapter.sides or not gm.path:
        return False
    prompt_format = ModelCard.read(gm.path).extra.get("prompt_format")
    return isinstance(prompt_format, dict) and "decoder_prefix" in prompt_format


def decoder_prefix_ids(gm, lead_ins: list[str], names: list[str] | None = None) -> torch.Tensor:
    """(B, 1 + n) decoder inputs: the start token then each lead-in's tokens; GenIRError naming the prompt when lead-ins differ in length.

    The rows must be of one length because the predicting position is the decoder's last column and the
    T5 decoder is run without a decoder attention mask (the training never padded the prefix either).
    """
    rows = [gm.tokenizer(lead, add_special_tokens=False)["input_ids"] if lead else [] for lead in lead_ins]
    if len({len(r) for r in rows}) > 1:
        shown = ", ".join(f"{names[i] if names else i}: {len(r)}" for i, r in enumerate(rows))
        raise GenIRError(f"{gm.path}: the prompts' decoder lead-ins tokenize to different lengths ({shown}); "
                         "batch prompts whose lead-ins have the same number of tokens")
    prefix = torch.tensor(rows, dtype=torch.long, device=gm.device).reshape(len(rows), -1)
    return torch.cat([gm.start_ids(len(rows)), prefix], 1)


def prompt_batch(gm, prompts: list[str], reserve: int = 0, names: list[str] | None = None) -> QueryBatch:
    """Prompts as one left-padded batch, untruncated; GenIRError naming the prompt when one (plus `reserve` generated tokens) exceeds the model's positions.

    For a model trained with the lead-in as its decoder prefix (`lead_in_to_decoder`), the encoder reads each
    prompt without its trailing lead-in and `decoder_input_ids` hold the start token plus the lead-in.
    """
    if not prompts:
        raise GenIRError("no prompts to run")
    decoder = None
    if lead_in_to_decoder(gm):
        parts = [split_lead_in(p) for p in prompts]
        prompts = [encoder_text for encoder_text, _ in parts]
        decoder = decoder_prefix_ids(gm, [lead for _, lead in parts], names)
    rows = [prompt_token_ids(gm.tokenizer, p) for p in prompts]
    if "encoder" in gm.adapter.sides and gm.tokenizer.eos_token_id is not None:
        # An encoder reads the whole prompt as one sequence ending in </s>, as the T5 NIAH objective trains it;
        # the answer comes from the decoder, so nothing follows the prompt on this side.
        rows = [r + [gm.tokenizer.eos_token_id] for r in rows]
    limit = max_positions(gm)
    for i, ids in enumerate(rows):
        if not ids:
            raise GenIRError(f"prompt {names[i] if names else i} is empty")
        if limit is not None and len(ids) + reserve > limit:
            raise GenIRError(
                f"prompt {names[i] if names else i}: {len(ids)} tokens{f' + {reserve} to generate' if reserve else ''} exceed the "
                f"{limit} positions of {gm.path} (max_position_embeddings); use shorter contexts"
            )
    width = max(len(r) for r in rows)
    pad = gm.tokenizer.pad_token_id if gm.tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return QueryBatch(ids.to(gm.device), mask.to(gm.device), None, decoder)


def pad_offsets(batch: QueryBatch) -> torch.Tensor:
    """(B,) number of left-padding columns of each row: unpadded position p sits at column p + offset."""
    return (batch.attention_mask == 0).sum(1)


def token_span(tokenizer, prompt: str, piece: str, what: str = "piece", start_char: int | None = None) -> tuple[int, int]:
    """[start, end) token indices of `piece` inside `prompt` (its first occurrence from `start_char`), over `prompt_token_ids`.

    GenIRError when the piece is not in the prompt, when the tokenizer gives no
    character offsets, or when a token straddles the piece's boundary (it
    tokenizes differently inside the prompt than alone).
    """
    begin = prompt.find(piece, start_char or 0)
    if not piece or begin < 0:
        raise GenIRError(f"the {what} {piece[:60]!r} does not occur in its prompt")
    finish = begin + len(piece)
    try:
        enc = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):
        raise GenIRError("the tokenizer gives no character offsets (a slow tokenizer); token spans need a fast tokenizer") from None
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > begin and a < finish and b > a]
    if not inside:
        raise GenIRError(f"the {what} {piece[:60]!r} covers no token of its prompt")
    first, last = inside[0], inside[-1]
    a, b = enc["offset_mapping"][first][0], enc["offset_mapping"][last][1]
    if a < begin or b > finish:
        straddle = prompt[min(a, begin):max(b, finish)]
        raise GenIRError(
            f"the {what} {piece[:60]!r} tokenizes differently inside its prompt: a token spans its boundary ({straddle[:80]!r}); "
            "separate it from the surrounding text (e.g. with spaces or punctuation)"
        )
    return first, last + 1
