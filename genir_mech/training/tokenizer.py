"""Build a word-level T5-style tokenizer from corpus text, with atomic docid tokens.

    tok = build_tokenizer(texts, doc_ids=ds.documents)

Token ids follow T5 conventions (pad 0 = decoder start, eos 1, unk 2), and
`<extra_id_i>` sentinels exist for span-corruption pretraining. Docid tokens
are added tokens spelled like the public DSI-large checkpoints (`@DOC_ID_<id>@`).
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from ..docids import docid_token

N_SENTINELS = 100


def _word_level(texts: Iterable[str], min_frequency: int) -> Tokenizer:
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "</s>", "<unk>"]
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=min_frequency))
    return core


def build_tokenizer(texts: Iterable[str], doc_ids: Iterable[str], min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on `texts`, with one added `@DOC_ID_<id>@` token per document."""
    core = _word_level(texts, min_frequency)
    core.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(N_SENTINELS)]})
    # normalized=False keeps the lowercasing normalizer away from '@DOC_ID_..@'
    tok.add_tokens([AddedToken(docid_token(d), normalized=False) for d in doc_ids])
    return tok


def build_lm_tokenizer(texts: Iterable[str], doc_ids: Iterable[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer for a decoder-only model: the same vocabulary rules, but nothing appended to a text.

    A causal model continues the prompt itself, so no end token is added (`</s>` ends the answers it learns
    to generate), no sentinels are needed, and padding goes on the left, where the batch's last position is
    the next-token step of every row.
    """
    tok = PreTrainedTokenizerFast(tokenizer_object=_word_level(texts, 1), pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                  padding_side="left")
    tok.add_tokens([AddedToken(docid_token(d), normalized=False) for d in doc_ids])
    return tok


def add_docid_tokens(model, tokenizer, mapping) -> list[str]:
    """Add the token strings of a sequence docid mapping (`docids.DocidMapping`) that the tokenizer lacks, and grow the
    model's embeddings to match; returns the tokens added.

    The tokens are added unnormalised and single-word: a digit token "1" is matched only as a word of its own, so the
    year "1901" in a document keeps its one word-level token instead of becoming four docid digits.
    """
    vocab = tokenizer.get_vocab()
    missing = [t for t in mapping.tokens if t not in vocab]
    if missing:
        tokenizer.add_tokens([AddedToken(t, normalized=False, single_word=True) for t in missing])
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # transformers explains its (sensible) mean initialisation of new rows on every call
        try:
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(verbosity)
    return missing
