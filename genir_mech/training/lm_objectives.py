"""Decoder-only retrieval objectives: needle-in-a-haystack and in-context document retrieval, loss on the answer only.

    task = LMTask(niah_lengths=(128, 256, 512), incontext_docs=(4, 8, 16), examples_per_epoch=1024)
    examples = lm_examples(task, tokenizer, corpus, epoch=3, seed=0)   # (input ids, labels) pairs for TrainLoop
    correct = answer_correct(model, tokenizer, prompts, answers)         # exact greedy answers, one forward each

An example is the prompt followed by the answer and `</s>`; its labels are
-100 over the prompt, so only the answer tokens (and the end token that stops
greedy decoding) are learned. Every epoch draws fresh NIAH trials (train
needle pools, depths on a 0.1 grid) and fresh in-context examples (train
split, relevant documents and query templates disjoint from the held-out
splits), deterministic for (seed, epoch), so a resumed run sees the same data.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

from ..data.incontext import InContextConfig, incontext_examples
from ..data import niah as niah_data
from ..data.niah import NiahConfig, niah_trials
from ..data.synthetic import SyntheticConfig
from ..errors import GenIRError
from .loop import Example, collate

TRAIN_DEPTHS = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class LMTask:
    """The mixture a decoder-only model is trained on: NIAH context lengths, in-context document counts, epoch size."""
    niah_lengths: tuple[int, ...] = (64, 128, 256, 512)
    incontext_docs: tuple[int, ...] = (2, 4, 8, 16)
    examples_per_epoch: int = 512
    incontext_share: float = 0.4  # share of in-context retrieval examples; the rest are NIAH trials

    def __post_init__(self):
        object.__setattr__(self, "niah_lengths", tuple(int(n) for n in self.niah_lengths))
        object.__setattr__(self, "incontext_docs", tuple(int(n) for n in self.incontext_docs))

    def check(self) -> "LMTask":
        """Refuse a mixture that trains nothing, naming the flag."""
        if not self.niah_lengths or min(self.niah_lengths) < 16:
            raise GenIRError(f"niah_lengths must be context lengths of at least 16 tokens, got {list(self.niah_lengths)} (CLI: --niah-lengths)")
        if not self.incontext_docs or min(self.incontext_docs) < 2:
            raise GenIRError(f"incontext_docs must be document counts of at least 2, got {list(self.incontext_docs)} (CLI: --incontext-docs)")
        if self.examples_per_epoch < 2:
            raise GenIRError(f"examples_per_epoch must be at least 2, got {self.examples_per_epoch} (CLI: --examples-per-epoch)")
        if not 0.0 <= self.incontext_share <= 1.0:
            raise GenIRError(f"incontext_share must be between 0 and 1, got {self.incontext_share} (CLI: --incontext-share)")
        return self

    def asdict(self) -> dict:
        return asdict(self)


def encode_example(tokenizer, prompt: str, answer: str) -> Example:
    """(prompt + answer + </s> ids, labels that are -100 over the prompt): the causal LM learns the answer only."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def encode_seq2seq_example(tokenizer, prompt: str, answer: str) -> Example:
    """(encoder ids, decoder labels, decoder input ids): an encoder-decoder reads the prompt and learns the answer only.

    A NIAH prompt's trailing lead-in ("the access code of <entity> is") leaves the encoder and becomes a
    teacher-forced decoder prefix after the start token, with -100 labels; the labels are the answer and `</s>`.
    So the decoder's last lead-in position predicts the first code word, as in the decoder-only prompt, and the
    copy goes through cross-attention. An in-context prompt has no lead-in: the decoder starts from its start token.
    """
    encoder_text, lead_in = niah_data.split_lead_in(prompt)
    prefix_ids = tokenizer(lead_in, add_special_tokens=False)["input_ids"] if lead_in else []
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    labels = [-100] * len(prefix_ids) + answer_ids
    decoder_ids = [decoder_start_id(tokenizer)] + prefix_ids + answer_ids[:-1]
    return tokenizer(encoder_text)["input_ids"], labels, decoder_ids


def decoder_start_id(tokenizer) -> int:
    """The T5 decoder's start token: `<pad>` (T5's `decoder_start_token_id` is the pad id)."""
    return tokenizer.pad_token_id


def example_encoder(model) -> Callable[..., Example]:
    """How `model` reads a (prompt, answer) pair: `encode_seq2seq_example` for an encoder-decoder, else `encode_example`."""
    return encode_seq2seq_example if model.config.is_encoder_decoder else encode_example


def _split_counts(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def task_prompts(task: LMTask, corpus: SyntheticConfig, seed: int, n: int, niah_split: str = "train",
                 incontext_split: str = "train") -> list[tuple[str, str]]:
    """`n` (prompt, answer) pairs of the mixture, deterministic for `seed`: NIAH trials then in-context examples."""
    n_incontext = round(task.incontext_share * n)
    n_niah = n - n_incontext
    pairs: list[tuple[str, str]] = []
    if n_niah:
        cells = len(task.niah_lengths) * len(TRAIN_DEPTHS)
        config = NiahConfig(lengths=task.niah_lengths, depths=TRAIN_DEPTHS, trials_per_cell=math.ceil(n_niah / cells), seed=seed,
                            split=niah_split, corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
        trials = niah_trials(config)
        pairs += [(t.prompt, t.answer) for t in random.Random(seed).sample(trials, n_niah)]
    for n_docs, count in zip(task.incontext_docs, _split_counts(n_incontext, len(task.incontext_docs))):
        if count:
            sizes = {"n_train": 0, "n_detection": 0, "n_test": 0, f"n_{incontext_split}": count}
            config = InContextConfig(**sizes, n_docs=n_docs, seed=seed, corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
            pairs += [(e.prompt, e.answer) for e in incontext_examples(config)]
    return pairs


def lm_examples(task: LMTask, tokenizer, corpus: SyntheticConfig, epoch: int, seed: int, max_positions: int | None,
                encode: Callable[..., Example] = encode_example) -> list[Example]:
    """One epoch of the mixture as (input ids, labels), deterministic for (seed, epoch); `encode` = `example_encoder(model)`.

    `max_positions` None: no limit (T5's relative positions).
    """
    pairs = task_prompts(task, corpus, seed * 100_003 + epoch, task.examples_per_epoch)
    examples = [encode(tokenizer, p, a) for p, a in pairs]
    longest = max(len(x) for x, *_ in examples)
    if max_positions is not None and longest > max_positions:
        raise GenIRError(f"training examples of {longest} tokens exceed the model's {max_positions} positions; "
                         "lower --niah-lengths / --incontext-docs or raise --max-positions")
    return examples


class AnswerLoss(torch.nn.Module):
    """Wraps a causal LM for training: the cross-entropy of the answer tokens, computing logits only where labels are set.

    Same loss as the HF model's own (labels shifted by one, -100 ignored), without projecting every prompt
    position onto the vocabulary: the prompts are hundreds of tokens and the answers three or four.
    """

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, labels):
        hidden = self.lm.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        targets = labels[:, 1:]
        rows, cols = (targets != -100).nonzero(as_tuple=True)
        logits = self.lm.lm_head(hidden[rows, cols])
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits, targets[rows, cols]))


@torch.no_grad()
def answer_correct(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16) -> list[bool]:
    """Whether greedy decoding after each prompt yields exactly its answer and then `</s>`.

    Teacher forcing gives the same verdict in one forward pass: greedy decoding produces the answer exactly
    when the argmax at every answer position is the next answer token, given the answer so far.
    """
    out: list[bool] = []
    model.eval()
    if model.config.is_encoder_decoder:
        return _seq2seq_answer_correct(model, tokenizer, prompts, answers, batch_size)
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_example(tokenizer, p, a) for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
        width = max(len(x) for x, _ in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (x, _) in enumerate(encoded):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        predicted = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.argmax(-1).cpu()
        for i, (x, labels) in enumerate(encoded):
            positions = [j for j, y in enumerate(labels) if y != -100]
            out.append(all(int(predicted[i, j - 1]) == labels[j] for j in positions))
    return out


def _seq2seq_answer_correct(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int) -> list[bool]:
    """`answer_correct` of an encoder-decoder: the prompt in the encoder, the lead-in (if any) and answer teacher-forced into the decoder."""
    out: list[bool] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_seq2seq_example(tokenizer, p, a) for p, a in zip(prompts[start:start + batch_size], answers[start:start + batch_size])]
        batch = {k: v.to(model.device) for k, v in collate(encoded, tokenizer.pad_token_id).items()}
        labels = batch["labels"].cpu()
        predicted = model(**batch).logits.argmax(-1).cpu()
        out += [bool(((predicted[i] == labels[i]) | (labels[i] == -100)).all()) for i in range(len(encoded))]
    return out
