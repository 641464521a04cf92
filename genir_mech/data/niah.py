"""Needle-in-a-haystack trials over the synthetic corpus: a grid of context lengths x needle depths.

    trials = niah_trials(NiahConfig(lengths=(256, 512), depths=(0.0, 0.5, 1.0), seed=0), tokenizer)
    trials[0].prompt        # filler sentences, the needle at the requested depth, the question, the needle's lead-in
    save_niah(trials, "runs/data/niah.jsonl"); load_niah("runs/data/niah.jsonl")
    needle_token_span(tokenizer, trials[0])   # (start, end) of the needle in the tokenized prompt

The haystack is made of sentences of synthetic-corpus documents (whole
documents in a random order). The needle states a fact the filler cannot
contain: "the access code of <entity> is <w1 w2 w3> ." where the entity and
the code words are made-up words drawn from pools disjoint from every word of
the corpus (`needle_vocabulary`). Lengths are counted in tokens of the given
tokenizer (default: one token per word or punctuation run, which is exactly
the word-level tokenizer `checkpoints/lm-niah` uses): the context
(haystack with needle) has at most `context_length` tokens and is filled to
within one filler word of it. The depth is the share of filler tokens before
the needle; the needle sits at the sentence boundary nearest to it.

Held-out needles: `split="test"` draws entities from a pool never used by
`split="train"`, and code-word triples from a disjoint half of all triples,
so a model trained on train trials is evaluated on facts it has never seen.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import GenIRError
from .records import load_records, save_records
from .synthetic import SyntheticConfig, _unique_words, generate_corpus

SPLITS = ("train", "test")
LEAD_IN = "the access code of {entity} is"
NEEDLE = LEAD_IN + " {code} ."
QUESTION = "what is the access code of {entity} ?"
# The prompt ends with the needle's own lead-in, so the answer is a copy of the tokens that follow it in the
# haystack (an induction / retrieval-head task, the behaviour Wu et al.'s retrieval score measures).
PROMPT = "{context} question : {question} answer : {lead_in}"
# An encoder-decoder reads the prompt up to "answer :" and gets the lead-in as its decoder prefix (`split_lead_in`),
# so the copy it learns is the same, through cross-attention.
ENCODER_PROMPT = PROMPT.removesuffix(" {lead_in}")
_TRAILING_LEAD_IN = re.compile(" (" + re.escape(LEAD_IN).replace(re.escape("{entity}"), r"\S+") + ")$")
_WORD = re.compile(r"\w+|[^\w\s]+")


def count_words(text: str) -> int:
    """Tokens of the project's word-level tokenizer (words and punctuation runs, as its Whitespace pre-tokenizer splits)."""
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class NiahConfig:
    """Grid and pools of a NIAH data set; equal configs (and tokenizers) give identical trials.

    NiahConfig(lengths=(512,), depths=(0.0, 0.5, 1.0), trials_per_cell=4, seed=1, split="test")
    """
    lengths: tuple[int, ...] = (128, 256, 512)  # context lengths in tokens (haystack with needle, without the question)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # share of filler tokens before the needle
    trials_per_cell: int = 2
    seed: int = 0
    split: str = "test"  # "train" or "test": disjoint needle entities and code triples
    code_words: int = 3  # words in an access code
    corpus_docs: int = 1000  # the synthetic corpus the filler comes from
    corpus_seed: int = 0
    n_entities: int = 500  # pool of made-up needle entities (a fifth of them held out for test)
    n_code_words: int = 200  # pool of made-up code words

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(int(n) for n in self.lengths))
        object.__setattr__(self, "depths", tuple(float(d) for d in self.depths))

    def validate(self) -> "NiahConfig":
        """Raise a one-line GenIRError for a config that cannot produce trials."""
        if not self.lengths or any(n < 16 for n in self.lengths):
            raise GenIRError(f"lengths must be context lengths of at least 16 tokens, got {list(self.lengths)}")
        if not self.depths or any(not 0.0 <= d <= 1.0 for d in self.depths):
            raise GenIRError(f"depths must be shares between 0 and 1, got {list(self.depths)}")
        if self.trials_per_cell < 1:
            raise GenIRError(f"trials_per_cell must be at least 1, got {self.trials_per_cell}")
        if self.split not in SPLITS:
            raise GenIRError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.code_words < 1:
            raise GenIRError(f"code_words must be at least 1, got {self.code_words}")
        if self.n_entities < 5 or self.n_code_words < 2:
            raise GenIRError(f"n_entities must be at least 5 and n_code_words at least 2, got {self.n_entities} and {self.n_code_words}")
        return self

    def corpus(self) -> SyntheticConfig:
        return SyntheticConfig(n_docs=self.corpus_docs, seed=self.corpus_seed, n_pairs=0)


@dataclass(frozen=True)
class NiahTrial:
    """One NIAH trial; `needle` occurs exactly once, verbatim, in `prompt` (= haystack with needle + question)."""
    trial_id: str
    context_length: int
    depth: float
    prompt: str
    answer: str
    needle: str
    question: str


@dataclass(frozen=True)
class NeedleVocabulary:
    """Made-up needle entities and code words, disjoint from the corpus words and from each other."""
    train_entities: tuple[str, ...]
    test_entities: tuple[str, ...]
    code_words: tuple[str, ...]

    def words(self) -> list[str]:
        """Every word a needle can use (for building a word-level tokenizer)."""
        return [*self.train_entities, *self.test_entities, *self.code_words]


def corpus_words(config: SyntheticConfig) -> set[str]:
    """Every word of the synthetic corpus's documents and queries (lower-cased)."""
    ds = generate_corpus(config)
    return {w for text in [*ds.documents.values(), *(q.text for q in ds.queries)] for w in _WORD.findall(text.lower())}


def needle_vocabulary(config: NiahConfig) -> NeedleVocabulary:
    """The entity and code-word pools of `config` (they depend on the corpus, never on the trial seed)."""
    taken = corpus_words(config.corpus()) | set(_WORD.findall((NEEDLE + QUESTION + PROMPT).lower()))
    rng = random.Random(f"needles-{config.corpus_seed}")
    entities = _unique_words(rng, config.n_entities, (3, 3), taken)
    codes = _unique_words(rng, config.n_code_words, (2, 2), taken)
    held_out = max(1, config.n_entities // 5)
    return NeedleVocabulary(tuple(entities[held_out:]), tuple(entities[:held_out]), tuple(codes))


def code_split(code: tuple[str, ...]) -> str:
    """Which split a code-word tuple belongs to: a fixed hash halves all tuples, so train and test codes never meet."""
    return "test" if hashlib.sha256(" ".join(code).encode()).digest()[0] % 2 else "train"


def filler_sentences(config: SyntheticConfig) -> list[list[str]]:
    """The corpus documents as lists of sentences (each ending in '.'), in document order."""
    docs = generate_corpus(config).documents
    out = []
    for text in docs.values():
        parts = [p.strip() for p in text.split(" . ") if p.strip()]
        out.append([p if p.endswith(".") else p + " ." for p in parts])
    return out


def _counter(tokenizer) -> Callable[[str], int]:
    if tokenizer is None:
        return count_words
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _draw_needle(rng: random.Random, vocab: NeedleVocabulary, config: NiahConfig) -> tuple[str, tuple[str, ...]]:
    entities = vocab.test_entities if config.split == "test" else vocab.train_entities
    while True:
        code = tuple(rng.choice(vocab.code_words) for _ in range(config.code_words))
        if code_split(code) == config.split:
            return rng.choice(entities), code


def make_trial(trial_id: str, length: int, depth: float, entity: str, code: tuple[str, ...], sentences: list[list[str]],
               rng: random.Random, count: Callable[[str], int]) -> NiahTrial:
    """One trial: filler sentences up to `length` tokens with the needle at the boundary nearest to `depth`."""
    needle = NEEDLE.format(entity=entity, code=" ".join(code))
    budget = length - count(needle)
    if budget < 1:
        raise GenIRError(f"context length {length} leaves no room for filler around the {count(needle)}-token needle")
    pieces, sizes, used = [], [], 0
    order = rng.sample(range(len(sentences)), len(sentences))
    for doc in (sentences[i] for i in order):
        for sentence in doc:
            n = count(sentence)
            if used + n > budget:
                # fill the rest word by word so every trial of a length has (nearly) the same size
                words = []
                for word in sentence.split():
                    if used + count(" ".join(words + [word])) > budget:
                        break
                    words.append(word)
                if words:
                    pieces.append(" ".join(words))
                    sizes.append(count(pieces[-1]))
                    used += sizes[-1]
                break
            pieces.append(sentence)
            sizes.append(n)
            used += n
        else:
            continue
        break
    bounds = [0]
    for n in sizes:
        bounds.append(bounds[-1] + n)
    slot = min(range(len(bounds)), key=lambda i: (abs(bounds[i] - depth * used), i))
    context = " ".join(pieces[:slot] + [needle] + pieces[slot:])
    while count(context) > length and pieces:  # subword merges across pieces: trim filler from the end
        last = len(pieces) - 1
        pieces[last] = " ".join(pieces[last].split()[:-1])
        if not pieces[last]:
            pieces.pop()
        slot = min(slot, len(pieces))
        context = " ".join(pieces[:slot] + [needle] + pieces[slot:])
    question = QUESTION.format(entity=entity)
    prompt = PROMPT.format(context=context, question=question, lead_in=LEAD_IN.format(entity=entity))
    return NiahTrial(trial_id, length, depth, prompt, " ".join(code), needle, question)


def split_lead_in(prompt: str) -> tuple[str, str]:
    """(the prompt without its trailing needle lead-in, that lead-in); (prompt, "") when it ends in none (in-context prompts)."""
    match = _TRAILING_LEAD_IN.search(prompt)
    return (prompt[: match.start()], match.group(1)) if match else (prompt, "")


def niah_trials(config: NiahConfig = NiahConfig(), tokenizer=None) -> list[NiahTrial]:
    """Every (length, depth) cell of the grid `trials_per_cell` times; identical for identical config and tokenizer.

    `tokenizer` (any HuggingFace tokenizer) decides how lengths are counted; None counts words and punctuation,
    which is the lm-niah tokenizer's count.
    """
    config.validate()
    vocab = needle_vocabulary(config)
    sentences = filler_sentences(config.corpus())
    count = _counter(tokenizer)
    rng = random.Random(f"niah-{config.seed}-{config.split}")
    trials = []
    for length in config.lengths:
        for depth in config.depths:
            for k in range(config.trials_per_cell):
                entity, code = _draw_needle(rng, vocab, config)
                trial_id = f"{config.split}-L{length}-d{depth:g}-{k}"
                trials.append(make_trial(trial_id, length, depth, entity, code, sentences, rng, count))
    return trials


def config_record(config: NiahConfig) -> dict:
    """The config as a JSON-ready dict (recorded beside data files and in model cards)."""
    return asdict(config)


def save_niah(trials: list[NiahTrial], path) -> None:
    """Write trials to a JSONL file (one trial a line), atomically."""
    save_records(trials, path)


def load_niah(path) -> list[NiahTrial]:
    """Read a niah.jsonl file; a malformed line, or a needle not occurring exactly once in its prompt, names file and line."""
    trials = load_records(path, NiahTrial)
    for lineno, trial in enumerate(trials, start=1):
        if trial.prompt.count(trial.needle) != 1:
            raise GenIRError(f"{path}, trial {lineno} ({trial.trial_id}): the needle occurs {trial.prompt.count(trial.needle)} times in the prompt, expected once")
    return trials


def needle_token_span(tokenizer, trial: NiahTrial, add_special_tokens: bool = True) -> tuple[int, int]:
    """(start, end) token indices (end exclusive) of the needle in `tokenizer(trial.prompt)`.

    The indices refer to the prompt tokenized as the model sees it (`add_special_tokens=True`, as GenIRModel.batch
    does). Raises a GenIRError when the needle does not occur exactly once, when the tokenizer gives no character
    offsets (a slow tokenizer), or when the needle tokenizes differently inside the haystack than on its own
    (a token straddles its boundary, or its tokens differ): its span would then not hold the needle's tokens.
    """
    prompt, needle = trial.prompt, trial.needle
    if prompt.count(needle) != 1:
        raise GenIRError(f"trial {trial.trial_id}: the needle occurs {prompt.count(needle)} times in the prompt, expected once")
    if not getattr(tokenizer, "is_fast", False):
        raise GenIRError(f"trial {trial.trial_id}: the tokenizer {type(tokenizer).__name__} gives no character offsets; a fast tokenizer is needed to locate the needle")
    enc = tokenizer(prompt, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    first = prompt.index(needle)
    last = first + len(needle)
    inside = [i for i, (s, e) in enumerate(offsets) if e > s and s < last and e > first]
    problem = None
    if not inside:
        problem = "no token covers it"
    else:
        start, end = inside[0], inside[-1] + 1
        straddles = [i for i in (start, end - 1) if offsets[i][0] < first and prompt[offsets[i][0]:first].strip() or offsets[i][1] > last]
        alone = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in (needle, " " + needle)]
        if straddles:
            s, e = offsets[straddles[0]]
            problem = f"token {straddles[0]} ({prompt[s:e]!r}) crosses the needle's boundary"
        elif ids[start:end] not in alone:
            problem = f"its {end - start} tokens inside the prompt differ from the {len(alone[0])} it has on its own"
    if problem:
        raise GenIRError(f"trial {trial.trial_id}: the needle {needle!r} tokenizes differently inside the haystack ({problem}); "
                         "put whitespace around it or choose another needle")
    return start, end
