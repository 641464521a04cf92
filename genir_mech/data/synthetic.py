"""Deterministic synthetic GenIR corpus: fictional entities, their attributes, and queries.

    ds = generate_corpus(SyntheticConfig(n_docs=1000, seed=0))
    ds.split("test")      # queries written with templates never used in training
    ds.pairs              # clean/corrupted query pairs of equal word length

Every document describes one entity with a unique made-up name. Queries ask
about one attribute of an entity; train, validation and test queries use
disjoint template sets so held-out accuracy measures generalisation, not
memorised phrasing. `attribute_values` controls how many distinct values each
attribute has: fewer values means more documents share them, so queries that
name an attribute but not the entity become ambiguous.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from ..errors import GenIRError
from ..vocabulary import MAX_ATTRIBUTE_VALUES, MAX_N_DOCS, MAX_N_PAIRS
from .corpus import Query, RetrievalDataset

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kl", "tr", "st", "sk", "pl", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ei"]
_CODAS = ["", "n", "r", "l", "s", "x", "th", "nd", "rk", "m"]

KINDS = ["town", "river", "company", "band", "ship", "mountain", "festival", "library", "bridge", "museum", "island", "monastery"]
FEATURES = [
    "copper mining", "glass blowing", "salt trade", "wool weaving", "clock making", "horse breeding",
    "tea growing", "paper milling", "silver smithing", "boat building", "bee keeping", "stone carving",
    "rope making", "wine pressing", "map drawing", "bell casting", "silk dyeing", "cheese aging",
    "lantern making", "fur trading", "star gazing", "ink brewing", "drum making", "kite flying",
]
COLOURS = ["red", "blue", "green", "amber", "violet", "white", "black", "golden", "grey", "teal", "crimson", "ochre"]

# Template sets are disjoint across splits on purpose: a model that only
# memorised training phrasing fails validation/test.
TEMPLATES = {
    "train": [
        "where is {name}",
        "what is {name} known for",
        "who founded {name}",
        "when was {name} founded",
        "what kind of thing is {name}",
        "what colour is the emblem of {name}",
        "{name} {region}",
        "{name} founder",
        "tell me about {name}",
        "which region is home to {name}",
        "{name} famous for",
        "the {kind} called {name}",
        "the {kind} founded by {founder}",
    ],
    "validation": [
        "in which region lies {name}",
        "who started {name}",
        "what is special about {name}",
        "information on {name}",
        "{founder} started which {kind}",
    ],
    "test": [
        "what region is {name} in",
        "who was the founder of {name}",
        "{name} is known for what",
        "what year did {name} start",
        "describe {name} please",
        "emblem colour of the {kind} {name}",
        "which {kind} did {founder} found",
    ],
}

DOC_TEMPLATES = [
    "{name} is a {kind} in {region} . it is known for {feature} . it was founded by {founder} in {year} . its emblem is {colour} .",
    "founded in {year} by {founder} , {name} is a {kind} of {region} . people know it for {feature} and its {colour} emblem .",
    "the {kind} {name} lies in {region} . {founder} founded it in {year} . {name} is famous for {feature} ; its emblem is {colour} .",
]


# Upper bounds of a config (MAX_N_DOCS, MAX_N_PAIRS, MAX_ATTRIBUTE_VALUES in genir_mech.vocabulary; data specs on the
# command line, in sweep configs and in model cards): a mistyped size fails at once instead of exhausting the machine.


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic corpus; equal configs give byte-identical datasets.

    generate_corpus(SyntheticConfig(n_docs=200, seed=1, attribute_values=8))
    """
    n_docs: int = 1000
    seed: int = 0
    attribute_values: int = 24  # distinct regions / features / colours; lower = more overlap
    n_pairs: int = 256

    def validate(self) -> None:
        """Raise GenIRError for a config that cannot produce a corpus."""
        if self.n_docs < 2:
            raise GenIRError(f"n_docs must be at least 2, got {self.n_docs}")
        if self.n_docs > MAX_N_DOCS:
            raise GenIRError(f"n_docs must be at most {MAX_N_DOCS:,}, got {self.n_docs:,} (the generator holds every document and its 17 queries "
                             "in memory: 100,000 documents take about 2 GB)")
        if self.attribute_values < 2:
            raise GenIRError(f"attribute_values must be at least 2, got {self.attribute_values}")
        if self.attribute_values > MAX_ATTRIBUTE_VALUES:
            raise GenIRError(f"attribute_values must be at most {MAX_ATTRIBUTE_VALUES:,}, got {self.attribute_values:,}")
        if not 0 <= self.n_pairs <= MAX_N_PAIRS:
            raise GenIRError(f"n_pairs must be between 0 and {MAX_N_PAIRS:,}, got {self.n_pairs:,}")


def _unique_words(rng: random.Random, n: int, syllables: tuple[int, int], taken: set[str]) -> list[str]:
    words: list[str] = []
    attempts = 0
    while len(words) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise GenIRError(f"cannot make {n} unique names; lower n_docs")
        k = rng.randint(*syllables)
        w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(k)) + rng.choice(_CODAS)
        if w not in taken:
            taken.add(w)
            words.append(w)
    return words


def generate_corpus(config: SyntheticConfig = SyntheticConfig()) -> RetrievalDataset:
    """Build documents, split queries and matched pairs; identical for identical configs."""
    config.validate()
    rng = random.Random(config.seed)
    taken: set[str] = set()
    names = _unique_words(rng, config.n_docs, (2, 3), taken)
    regions = _unique_words(rng, config.attribute_values, (2, 2), taken)
    regions = [r + "land" for r in regions]
    # enough first x last name combinations for unique founders (at least 2 per document)
    n_names = max(8, config.n_docs // 10, math.ceil(math.sqrt(2 * config.n_docs)))
    first = _unique_words(rng, n_names, (1, 2), taken)
    last = _unique_words(rng, n_names, (2, 2), taken)
    features = [FEATURES[i % len(FEATURES)] for i in range(config.attribute_values)]
    colours = [COLOURS[i % len(COLOURS)] for i in range(config.attribute_values)]

    founders: set[str] = set()
    documents: dict[str, str] = {}
    entities: dict[str, dict[str, str]] = {}
    for i, name in enumerate(names):
        while True:  # founders are unique so that a founder also decides the document
            founder = f"{rng.choice(first)} {rng.choice(last)}"
            if founder not in founders:
                founders.add(founder)
                break
        ent = {
            "name": name,
            "kind": rng.choice(KINDS),
            "region": rng.choice(regions),
            "feature": rng.choice(features),
            "colour": rng.choice(colours),
            "founder": founder,
            "year": str(rng.randint(1100, 1999)),
        }
        doc_id = str(i)
        entities[doc_id] = ent
        documents[doc_id] = rng.choice(DOC_TEMPLATES).format(**ent)

    queries: list[Query] = []
    qrels: dict[str, set[str]] = {}
    for doc_id, ent in entities.items():
        for split, templates in TEMPLATES.items():
            # Training sees every template; held-out splits see a sample so
            # evaluation stays cheap while covering all templates across docs.
            chosen = templates if split == "train" else rng.sample(templates, k=min(2, len(templates)))
            for t_index, template in enumerate(templates):
                if template not in chosen:
                    continue
                qid = f"{split[0]}{doc_id}-{t_index}"
                queries.append(Query(qid, template.format(**ent), split, template))
                qrels[qid] = {doc_id}

    pairs = _matched_pairs(rng, entities, config.n_pairs)
    return RetrievalDataset(documents, queries, qrels, pairs, meta={"generator": "synthetic", "config": asdict(config)})


def _matched_pairs(rng: random.Random, entities: dict[str, dict[str, str]], n_pairs: int) -> list[dict]:
    """Clean/corrupted queries that differ only in the word(s) that decide the answer.

    Half swap the entity name (one word each), half swap the founder (two words
    each), so both tokenize to equal length under a word-level tokenizer; the
    patching code still checks lengths under the model's own tokenizer.
    """
    ids = sorted(entities, key=int)
    name_templates = ["who founded {name}", "what is {name} known for", "where is {name}"]
    founder_templates = ["the {kind} founded by {founder}", "which {kind} did {founder} found"]
    pairs: list[dict] = []
    for k in range(n_pairs):
        a, b = rng.sample(ids, 2)
        ea, eb = entities[a], entities[b]
        if k % 2 == 0:
            t = name_templates[(k // 2) % len(name_templates)]
            clean, corrupt, decides = t.format(**ea), t.format(**eb), "entity"
        else:
            t = founder_templates[(k // 2) % len(founder_templates)]
            # the kind stays the clean one so that only the founder differs
            clean, corrupt, decides = t.format(**ea), t.format(**{**eb, "kind": ea["kind"]}), "founder"
        pairs.append({"pair_id": f"p{k}", "clean": clean, "corrupted": corrupt, "clean_doc": a, "corrupted_doc": b, "decides": decides})
    return pairs
