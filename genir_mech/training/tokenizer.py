"""Build a T5-style tokenizer from corpus text, with atomic docid tokens: word-level, or subword (BPE / unigram).

    tok = build_tokenizer(texts, doc_ids=ds.documents)
    tok = build_tokenizer(texts, doc_ids=ds.documents, kind="bpe", vocab_size=1000)

Token ids follow T5 conventions (pad 0 = decoder start, eos 1, unk 2), and
`<extra_id_i>` sentinels exist for span-corruption pretraining. Docid tokens
are added tokens spelled like the public DSI-large checkpoints (`@DOC_ID_<id>@`).
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from ..docids import docid_token

N_SENTINELS = 100
SPECIALS = ["<pad>", "</s>", "<unk>"]  # in this order: T5's pad 0, eos 1, unk 2
TOKENIZER_KINDS = ("word", "bpe", "unigram")  # `genir-mech train --tokenizer-kind`


def _normalizer():
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])


def _word_level(texts: Iterable[str], min_frequency: int) -> Tokenizer:
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.normalizer = _normalizer()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=min_frequency))
    return core


def _subword(texts: Iterable[str], kind: str, vocab_size: int) -> Tokenizer:
    """A BPE or unigram model trained on `texts`: frequent words stay whole, rare ones (the made-up names) split.

    Words are split on whitespace and marked with SentencePiece's '▁', so pieces never cross a word boundary
    and decoding restores the spaces.
    """
    if kind == "bpe":
        core = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    else:
        core = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>")
    core.normalizer = _normalizer()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(texts, trainer)
    return core


def build_tokenizer(texts: Iterable[str], doc_ids: Iterable[str], min_frequency: int = 1, kind: str = "word",
                    vocab_size: int = 1000) -> PreTrainedTokenizerFast:
    """A tokenizer trained on `texts`, with one added `@DOC_ID_<id>@` token per document.

    `kind` is "word" (one token per corpus word: the embedded checkpoints) or a subword model, "bpe" or
    "unigram", with `vocab_size` pieces before the sentinels and docids are added.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind must be one of {', '.join(TOKENIZER_KINDS)}, got {kind!r}")
    core = _word_level(texts, min_frequency) if kind == "word" else _subword(texts, kind, vocab_size)
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


def build_prompt_tokenizer(texts: Iterable[str], doc_ids: Iterable[str], template: str, slot: str = "{query}") -> PreTrainedTokenizerFast:
    """A decoder-only tokenizer that wraps every text in `template` (e.g. "query : {query} docid :"), left-padded.

    The wrapping is the tokenizer's post-processor, so `gm.batch(["who founded zorblax"])`, the retrieval
    evaluation and every analysis build the GenIR prompt of a decoder-only model from the bare query, as they
    do for an encoder-decoder one (whose tokenizer appends `</s>`); `add_special_tokens=False` gives the bare
    query tokens. The ranking step is the prompt's last token. The template's words join the vocabulary.
    """
    prefix, suffix = (part.split() for part in template.split(slot))
    core = _word_level([*texts, template.replace(slot, " ")], 1)
    vocab = core.get_vocab()
    # a template piece is named like a special token (<prefix>, <suffix>) and stands for the ids of its words
    pieces = [{"id": name, "ids": [vocab[w] for w in words], "tokens": words} for name, words in (("<prefix>", prefix), ("<suffix>", suffix)) if words]
    single = " ".join([*(["<prefix>"] if prefix else []), "$A", *(["<suffix>"] if suffix else [])])
    core.post_processor = processors.TemplateProcessing(single=single, special_tokens=pieces)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", padding_side="left")
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
            old_rows = model.get_input_embeddings().weight.shape[0]
            model.resize_token_embeddings(len(tokenizer))
        finally:
            hf_logging.set_verbosity(verbosity)
        _draw_new_rows(model, old_rows)
    return missing


def _draw_new_rows(model, old_rows: int) -> None:
    """Give the embedding rows from `old_rows` on random values at the scale of the existing rows.

    transformers' mean initialisation gives every new token the same row. For multi-token docids that is a saddle:
    the ten digit (or cluster-index) tokens get identical logits whatever the query, so their gradients are identical
    too and training stays at chance (measured: per-step loss ln 10 for ten epochs). Untied output rows get the same
    treatment. The draw uses torch's global generator, which the training run seeds.
    """
    import torch

    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    with torch.no_grad():
        for weight in matrices:
            if weight.shape[0] <= old_rows or old_rows == 0:
                continue
            existing = weight[:old_rows]
            new = torch.randn(weight.shape[0] - old_rows, weight.shape[1], dtype=weight.dtype) * existing.std()
            weight[old_rows:] = new + existing.mean(dim=0)
