"""The `niah` objective of `genir-mech train`: a decoder-only Llama (or, with --arch t5, a T5) trained on NIAH and in-context retrieval.

    train_model(TrainRequest("synthetic:n_docs=1000,seed=0", "checkpoints/lm-niah", objective="niah", shape=LlamaShape(), task=LMTask()))
    train_model(TrainRequest(..., "checkpoints/t5-niah", objective="niah", arch="t5", shape=T5Shape(encoder_layers=2, decoder_layers=2, ...)))

The T5 reads the same prompts in its encoder (with the `</s>` its tokenizer
appends), except a NIAH prompt's trailing lead-in ("the access code of <entity>
is"), which is its decoder's teacher-forced prefix; the decoder then generates
the same answers, so for both architectures the answer is a copy of what follows
the lead-in in the haystack. The tokenizer has the same words (plus T5's
sentinels), so the two architectures see the same tokens.

The model is built from scratch on a word-level tokenizer whose vocabulary is
the corpus, the needle pools and one `@DOC_ID_<i>@` token per in-prompt
document label (so `load_genir` finds docids and the in-context answer is one
token). Model selection uses a fixed validation draw (train needle pools,
the in-context detection split). The finished checkpoint is evaluated on
held-out needles (test pools) over a length x depth grid and on the
in-context test and detection splits; the card records it all, says the model
is decoder-only and how prompts are formatted, and `niah_accuracy.md` beside
the weights holds the per-length-and-depth table.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from ..data import incontext as incontext_data
from ..data import niah as niah_data
from ..data.corpus import RetrievalDataset
from ..data.synthetic import SyntheticConfig
from ..models.model_card import ModelCard
from ..provenance import written_atomically
from .architecture import architecture
from .lm_objectives import AnswerLoss, LMTask, answer_correct, example_encoder, lm_examples, task_prompts
from .loop import TrainLoop
from .tokenizer import build_lm_tokenizer, build_tokenizer
from .saving import best_saver, training_record

VALIDATION_EXAMPLES = 64
EVAL_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
EVAL_TRIALS_PER_CELL = 10
EVAL_SEED = 1  # the held-out NIAH grid's trial seed (test needle pools)
TABLE = "niah_accuracy.md"
LENGTH_BUCKETS = 8  # batches per length-sorted window (see TrainLoop)

PROMPT_FORMAT = {
    "architecture": "decoder-only (LlamaForCausalLM)",
    "tokenizer": "word-level, lower-cased; adds no BOS/EOS; pad on the left; one @DOC_ID_<i>@ token per in-prompt document label",
    "niah_prompt": niah_data.PROMPT.format(context="<haystack with needle>", question=niah_data.QUESTION, lead_in=niah_data.LEAD_IN),
    "niah_needle": niah_data.NEEDLE,
    "incontext_prompt": incontext_data.PROMPT.format(documents=incontext_data.DOCUMENT + " ...", query="<query>"),
    "answer": "the model continues the prompt: NIAH -> the code words then </s>; in-context -> the relevant document's @DOC_ID_<i>@ then </s>",
}
SEQ2SEQ_PROMPT_FORMAT = {
    **PROMPT_FORMAT,
    "architecture": "encoder-decoder (T5ForConditionalGeneration)",
    "tokenizer": "word-level, lower-cased (the decoder-only model's words plus T5's <extra_id_i> sentinels); appends </s> to the encoder "
                 "input; pad on the right; the decoder starts from <pad>; one @DOC_ID_<i>@ token per in-prompt document label",
    "encoder_input": "NIAH: the prompt without its trailing lead-in, followed by </s>: tokenizer(niah_encoder_prompt), i.e. "
                     "tokenizer(split_lead_in(prompt)[0]) (genir_mech.data.niah); in-context: the whole prompt followed by </s>",
    "niah_encoder_prompt": niah_data.ENCODER_PROMPT.format(context="<haystack with needle>", question=niah_data.QUESTION),
    "decoder_prefix": "NIAH: <pad> (the decoder start token) then the needle's lead-in '" + niah_data.LEAD_IN + "', teacher-forced "
                      "(tokenizer(lead_in, add_special_tokens=False)); the first code word is predicted at the lead-in's last "
                      "token ('is'); in-context: <pad> alone",
    "answer": "the decoder continues its prefix: NIAH -> the code words then </s>; in-context -> the relevant document's @DOC_ID_<i>@ then </s>",
}


def lm_tokenizer(corpus: SyntheticConfig, encoder_decoder: bool = False):
    """The word-level tokenizer of the niah objective: every word its NIAH and in-context prompts can hold (T5-style with `encoder_decoder`)."""
    from ..data.synthetic import generate_corpus

    ds = generate_corpus(corpus)
    vocab = niah_data.needle_vocabulary(niah_data.NiahConfig(corpus_docs=corpus.n_docs, corpus_seed=corpus.seed))
    formats = [niah_data.NEEDLE, niah_data.QUESTION, niah_data.PROMPT, incontext_data.DOCUMENT, incontext_data.PROMPT]
    texts = [*ds.documents.values(), *(q.text for q in ds.queries), " ".join(vocab.words()), *formats]
    build = build_tokenizer if encoder_decoder else build_lm_tokenizer
    return build(texts, [str(i) for i in range(incontext_data.InContextConfig().id_pool)])


def corpus_config(dataset: RetrievalDataset) -> SyntheticConfig:
    config = dataset.meta.get("config", {})
    return SyntheticConfig(n_docs=config.get("n_docs", len(dataset.documents)), seed=config.get("seed", 0))


def niah_grid_accuracy(model, tokenizer, config: niah_data.NiahConfig) -> dict:
    """Exact-answer accuracy of held-out needles: overall, per length, and per length and depth."""
    trials = niah_data.niah_trials(config)
    correct = answer_correct(model, tokenizer, [t.prompt for t in trials], [t.answer for t in trials])
    cells: dict[tuple[int, float], list[bool]] = defaultdict(list)
    for trial, ok in zip(trials, correct):
        cells[(trial.context_length, trial.depth)].append(ok)
    mean = lambda xs: round(sum(xs) / len(xs), 4)  # noqa: E731
    return {
        "accuracy": mean(correct),
        "n_trials": len(trials),
        "by_length": {str(n): mean([ok for (length, _), oks in cells.items() if length == n for ok in oks]) for n in config.lengths},
        "by_length_depth": {str(n): {f"{d:g}": mean(cells[(n, d)]) for d in config.depths} for n in config.lengths},
        "config": niah_data.config_record(config),
    }


def incontext_accuracy(model, tokenizer, config: incontext_data.InContextConfig) -> dict:
    """Exact-answer accuracy (the relevant document's id, then </s>) per split of `config`."""
    examples = incontext_data.incontext_examples(config)
    out = {}
    for split in incontext_data.SPLITS:
        chosen = [e for e in examples if e.split == split]
        if chosen:
            correct = answer_correct(model, tokenizer, [e.prompt for e in chosen], [e.answer for e in chosen])
            out[split] = {"accuracy": round(sum(correct) / len(correct), 4), "n": len(chosen)}
    return {**out, "config": incontext_data.config_record(config)}


def accuracy_table(niah: dict) -> str:
    """The per-length-and-depth NIAH accuracy as a Markdown table (rows: context length, columns: needle depth)."""
    depths = list(next(iter(niah["by_length_depth"].values())))
    lines = ["| context length \\ depth | " + " | ".join(depths) + " | all depths |", "|--:|" + "--:|" * (len(depths) + 1)]
    for length, row in niah["by_length_depth"].items():
        lines.append(f"| {length} | " + " | ".join(f"{row[d]:.2f}" for d in depths) + f" | {niah['by_length'][length]:.2f} |")
    return "\n".join(lines) + "\n"


def train_lm(req, dataset: RetrievalDataset, out: Path) -> dict:
    """Train (or resume) a decoder-only retrieval LM into `out` as a train.TrainRequest `req` asks, evaluate it on held-out needles, write its card."""
    task = req.task or LMTask()
    corpus = corpus_config(dataset)
    seq2seq = architecture(req) == "t5"
    auto_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    if req.base:  # a later stage of a curriculum: the base's weights and tokenizer (its shape is recorded in its card)
        tokenizer = AutoTokenizer.from_pretrained(req.base)
        model = auto_class.from_pretrained(req.base, use_safetensors=True)
    else:
        tokenizer = lm_tokenizer(corpus, encoder_decoder=seq2seq)
        model = req.shape.build(tokenizer)
    max_positions = None if seq2seq else model.config.max_position_embeddings  # T5's relative positions have no limit
    encode = example_encoder(model)
    held_out = task_prompts(task, corpus, req.loop.seed * 100_003 - 1, VALIDATION_EXAMPLES, incontext_split="detection")

    def validate() -> float:
        correct = answer_correct(model, tokenizer, [p for p, _ in held_out], [a for _, a in held_out])
        return sum(correct) / len(correct)

    # T5 computes its loss on the decoder labels alone (the answer); the causal LM needs AnswerLoss for that
    loop = TrainLoop(model if seq2seq else AnswerLoss(model), req.loop, out, pad_id=tokenizer.pad_token_id, length_buckets=LENGTH_BUCKETS)
    result = loop.fit(lambda e: lm_examples(task, tokenizer, corpus, e, req.loop.seed, max_positions, encode), validate,
                      best_saver(model, tokenizer, out))
    best = auto_class.from_pretrained(out, use_safetensors=True).eval()
    niah_config = niah_data.NiahConfig(lengths=task.niah_lengths, depths=EVAL_DEPTHS, trials_per_cell=EVAL_TRIALS_PER_CELL, seed=EVAL_SEED,
                                       split="test", corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
    incontext_config = incontext_data.InContextConfig(n_docs=max(task.incontext_docs), corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
    metrics = {"niah_test": niah_grid_accuracy(best, tokenizer, niah_config), "incontext": incontext_accuracy(best, tokenizer, incontext_config)}
    card = ModelCard(objective=req.objective, base=req.base, data=req.data, data_meta=dataset.meta, data_hash=dataset.data_hash(), metrics=metrics)
    card.extra = {
        "architecture": "encoder-decoder" if seq2seq else "decoder-only",
        "arch": architecture(req),
        "prompt_format": SEQ2SEQ_PROMPT_FORMAT if seq2seq else PROMPT_FORMAT,
        "task": task.asdict(),
        **training_record(req, result, sum(p.numel() for p in best.parameters())),
    }
    with written_atomically(out / TABLE) as tmp:
        tmp.write_text(f"NIAH exact-answer accuracy of {out.name} on held-out needles ({EVAL_TRIALS_PER_CELL} trials per cell, "
                       f"seed {EVAL_SEED}); written by `genir-mech train --objective niah`.\n\n" + accuracy_table(metrics["niah_test"]))
    card.write(out)
    return card.to_json()
