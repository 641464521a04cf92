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

from ..docids import docid_token

N_SENTINELS = 100


def build_tokenizer(texts: Iterable[str], doc_ids: Iterable[str], min_frequency: int = 1) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on `texts`, with one added `@DOC_ID_<id>@` token per document."""
    core = Tokenizer(models.WordLevel(unk_token="<unk>"))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "</s>", "<unk>"]
    core.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials, min_frequency=min_frequency))
    core.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": [f"<extra_id_{i}>" for i in range(N_SENTINELS)]})
    # normalized=False keeps the lowercasing normalizer away from '@DOC_ID_..@'
    tok.add_tokens([AddedToken(docid_token(d), normalized=False) for d in doc_ids])
    return tok
