"""The `dsi` objective on a decoder-only Llama (`genir-mech train --objective dsi --arch llama`): GenIR without an encoder.

    train_model(TrainRequest("synthetic:n_docs=1000,seed=0", "checkpoints/lm-dsi-synth", objective="dsi", arch="llama",
                             shape=LlamaShape(layers=8, d_model=128, d_ff=512, num_heads=4, num_kv_heads=4)))

The same examples and recipe as the T5 DSI models (training/objectives.py
`dsi_examples`: train queries and, at `indexing_ratio`, the first document
tokens, each mapped to the document's atomic docid; AdamW, warmup, early
stopping on validation Hits@1), read by a causal LM from scratch: the input is
the prompt `PROMPT` and the label is the docid token after its last token.

The prompt is built by the tokenizer (`build_prompt_tokenizer`), so a loaded
checkpoint ranks bare query texts like any GenIR model: `gm.batch(queries)`
gives the prompts, the ranking step is the last prompt position, and the
retrieval scorer, `genir-mech eval` and the decoder analyses need nothing else.
The card's `prompt_format` says how to rebuild a prompt and where the query
tokens lie in it.
"""
from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..data.corpus import RetrievalDataset
from ..docids import AtomicDocids
from ..models.loading import quiet_weight_loading
from ..retrieval import evaluate
from .lm_objectives import AnswerLoss
from .loop import Example, TrainLoop
from .objectives import INDEX_TOKENS, dsi_examples
from .saving import as_genir, best_saver
from .tokenizer import build_prompt_tokenizer

PROMPT = "query : {query} docid :"
LENGTH_BUCKETS = 8  # batches per length-sorted window (TrainLoop)
QUERY_SLOT = "{query}"


def prompt_format(tokenizer) -> dict:
    """The card's description of the prompt: template, where the query tokens lie, which position ranks."""
    prefix, suffix = (len(part.split()) for part in PROMPT.split(QUERY_SLOT))
    return {
        "architecture": "decoder-only (LlamaForCausalLM)",
        "template": PROMPT,
        "applied_by": "the tokenizer's post-processor: tokenizer(query) (add_special_tokens=True, what gm.batch does) gives the prompt; "
                      "add_special_tokens=False gives the bare query tokens",
        "query_tokens": {"first": prefix, "last_exclusive_from_end": suffix},  # query tokens = prompt_ids[prefix : len - suffix]
        "ranking_position": "last prompt token (the docid token follows it); pad on the left",
        "answer": "one atomic @DOC_ID_<id>@ token; indexing examples put the first document tokens in the query slot",
        "added_template_tokens": tokenizer.num_special_tokens_to_add(),
        "pretrained_base": None,  # no pretrained decoder-only base exists for this corpus: trained from scratch
    }


def lm_dsi_tokenizer(dataset: RetrievalDataset):
    """The word-level prompt tokenizer over the corpus (the vocabulary rules of the T5 DSI models), one docid token per document."""
    return build_prompt_tokenizer(list(dataset.documents.values()) + [q.text for q in dataset.queries], dataset.documents, PROMPT, QUERY_SLOT)


def lm_dsi_examples(dataset: RetrievalDataset, tokenizer, scheme: AtomicDocids, epoch: int, seed: int, indexing_ratio: float) -> list[Example]:
    """One epoch of DSI examples as (prompt + docid, labels set on the docid only), deterministic for (seed, epoch).

    Indexing inputs hold as many document tokens as the T5 models' (their `INDEX_TOKENS` count one `</s>`;
    the prompt adds its template tokens instead).
    """
    index_tokens = INDEX_TOKENS - 1 + tokenizer.num_special_tokens_to_add()
    pairs = dsi_examples(dataset, tokenizer, scheme, epoch, seed, indexing_ratio, index_tokens=index_tokens)
    return [(prompt + target, [-100] * len(prompt) + target) for prompt, target in pairs]


def train_lm_dsi(req, dataset: RetrievalDataset, train_data: RetrievalDataset, out: Path) -> tuple:
    """Train (or resume) a decoder-only DSI model into `out` as a train.TrainRequest `req` asks, on `train_data` (removed documents gone).

    The tokenizer has a docid for every document of `dataset`, removed ones included (as the T5 models' has).

    Returns (the best weights as a GenIRModel, the loop's result, the card's extra fields); train_model
    evaluates and writes the card as for a T5, so both architectures report the same metrics.
    """
    if req.base:
        with quiet_weight_loading():
            tokenizer = AutoTokenizer.from_pretrained(req.base)
            model = AutoModelForCausalLM.from_pretrained(req.base, use_safetensors=True)
    else:
        tokenizer = lm_dsi_tokenizer(dataset)
        model = req.shape.build(tokenizer)
    scheme = AtomicDocids.detect(tokenizer)
    # length-sorted windows: a batch of queries (~13 tokens) is not padded to the indexing examples' 35
    loop = TrainLoop(AnswerLoss(model), req.loop, out, pad_id=tokenizer.pad_token_id, length_buckets=LENGTH_BUCKETS)
    result = loop.fit(
        lambda e: lm_dsi_examples(train_data, tokenizer, scheme, e, req.loop.seed, req.indexing_ratio),
        lambda: evaluate(as_genir(model, tokenizer, scheme, out), train_data, "validation")[0]["hits@1"],
        best_saver(model, tokenizer, out),
    )
    with quiet_weight_loading():
        best = as_genir(AutoModelForCausalLM.from_pretrained(out, use_safetensors=True).eval(), tokenizer, scheme, out)
    return best, result, {"architecture": "decoder-only", "prompt_format": prompt_format(tokenizer)}
