"""`genir-mech data [corpus|niah|incontext]`: write a synthetic corpus (or re-export any loadable corpus), NIAH trials or in-context retrieval examples.

    genir-mech data --data synthetic:n_docs=1000,seed=0 --out runs/data/synth      # corpus (the default kind)
    genir-mech data niah --out runs/data/niah --lengths 128,256,512 --depths 0,0.5,1 # -> niah.jsonl
    genir-mech data incontext --out runs/data/incontext --n-docs 16                 # -> incontext.jsonl
    genir-mech data docids --scheme semantic --out runs/data/semantic               # -> docids.json (docid -> token strings)
"""
from __future__ import annotations

from ..vocabulary import DOCID_SCHEMES
from . import Verb
from .options import data_spec, dataclass_defaults, fraction, non_negative_int, number_list, output_directory, positive_int

KINDS = ("corpus", "niah", "incontext", "docids")
# read from the source without importing the generators, so a bad number fails while parsing
NIAH_DEFAULTS = dataclass_defaults("data.niah", "NiahConfig")
INCONTEXT_DEFAULTS = dataclass_defaults("data.incontext", "InContextConfig")
SEMANTIC_DEFAULTS = dataclass_defaults("data.docid_assignment", "SemanticConfig")


def add_arguments(p):
    p.add_argument("kind", nargs="?", choices=KINDS, default="corpus",
                   help="corpus (default): documents, split queries and pairs; niah: needle-in-a-haystack trials; incontext: in-context retrieval examples; "
                        "docids: a multi-token docid mapping of the corpus (docids.json, for train --docids)")
    p.add_argument("--data", type=data_spec, default="synthetic:n_docs=1000,seed=0",
                   help="data spec: synthetic:n_docs=N,seed=S,attribute_values=V,n_pairs=P | BEIR dir | DSI JSONL dir "
                        "(niah and incontext: the synthetic corpus their haystacks and documents come from)")
    p.add_argument("--out", type=output_directory, required=True,
                   help="directory for documents.jsonl, queries.jsonl and pairs.jsonl (corpus), niah.jsonl, incontext.jsonl or docids.json")
    p.add_argument("--seed", type=non_negative_int, default=0, help="niah/incontext/docids: seed of the trials, examples or k-means (default 0)")
    niah = p.add_argument_group("niah")
    niah.add_argument("--lengths", type=number_list(positive_int, "positive integers"), default=NIAH_DEFAULTS["lengths"],
                      help=f"context lengths in tokens of --tokenizer; default {','.join(map(str, NIAH_DEFAULTS['lengths']))}")
    niah.add_argument("--depths", type=number_list(fraction, "numbers between 0 and 1"), default=NIAH_DEFAULTS["depths"],
                      help=f"needle depths (share of filler before the needle); default {','.join(map(str, NIAH_DEFAULTS['depths']))}")
    niah.add_argument("--trials-per-cell", type=positive_int, default=NIAH_DEFAULTS["trials_per_cell"], help="trials per (length, depth)")
    niah.add_argument("--split", choices=("train", "test"), default=NIAH_DEFAULTS["split"], help="needle pools: test needles are never trained on")
    niah.add_argument("--tokenizer", help="count lengths in this tokenizer's tokens (a checkpoint directory or hub id); "
                                          "default: words and punctuation, the lm-niah tokenizer's count")
    incontext = p.add_argument_group("incontext")
    for name in ("n_train", "n_detection", "n_test"):
        incontext.add_argument(f"--{name.replace('_', '-')}", type=non_negative_int, default=INCONTEXT_DEFAULTS[name], help=f"examples in that split; default {INCONTEXT_DEFAULTS[name]}")
    incontext.add_argument("--n-docs", type=positive_int, default=INCONTEXT_DEFAULTS["n_docs"], help=f"documents per prompt (K); default {INCONTEXT_DEFAULTS['n_docs']}")
    incontext.add_argument("--id-pool", type=positive_int, default=INCONTEXT_DEFAULTS["id_pool"], help=f"document ids are drawn from @DOC_ID_0@..@DOC_ID_<id-pool - 1>@; default {INCONTEXT_DEFAULTS['id_pool']}")
    docids = p.add_argument_group("docids")
    docids.add_argument("--scheme", choices=DOCID_SCHEMES[1:], default="naive",
                        help="naive: the document number as digit tokens; semantic: hierarchical k-means over MiniLM-L6 document embeddings "
                             "(optional extra minilm); title: the shortest unique prefix of the document's words (default naive)")
    for name, text in (("branches", "semantic: clusters per k-means split"), ("leaf_size", "semantic: split until a cluster holds at most this many documents (c)"),
                       ("max_depth", "semantic: at most this many splits (the id has at most max-depth + 1 tokens)")):
        docids.add_argument(f"--{name.replace('_', '-')}", type=positive_int, default=SEMANTIC_DEFAULTS[name], help=f"{text}; default {SEMANTIC_DEFAULTS[name]}")
    p.add_argument("--json", action="store_true", help="print a summary as JSON")


def _synthetic(args):
    from ..data.loaders import parse_synthetic_spec
    from ..errors import GenIRError

    if not args.data.startswith("synthetic"):
        raise GenIRError(f"data {args.kind} builds on the synthetic corpus; --data must be a 'synthetic:...' spec, got {args.data!r}")
    return parse_synthetic_spec(args.data)


def _write_niah(args) -> dict:
    from ..data.niah import NiahConfig, niah_trials, save_niah

    corpus = _synthetic(args)
    tokenizer = None
    if args.tokenizer:
        from ..models.loading import load_tokenizer
        tokenizer = load_tokenizer(args.tokenizer)
    config = NiahConfig(lengths=args.lengths, depths=args.depths, trials_per_cell=args.trials_per_cell, seed=args.seed, split=args.split,
                        corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
    trials = niah_trials(config, tokenizer)
    path = f"{args.out}/niah.jsonl"
    save_niah(trials, path)
    return {"trials": len(trials), "lengths": list(config.lengths), "depths": list(config.depths), "split": config.split,
            "tokenizer": args.tokenizer or "words", "out": path}


def _write_incontext(args) -> dict:
    from ..data.incontext import InContextConfig, incontext_examples, save_incontext

    corpus = _synthetic(args)
    config = InContextConfig(n_train=args.n_train, n_detection=args.n_detection, n_test=args.n_test, n_docs=args.n_docs, seed=args.seed,
                             id_pool=args.id_pool, corpus_docs=corpus.n_docs, corpus_seed=corpus.seed)
    examples = incontext_examples(config)
    path = f"{args.out}/incontext.jsonl"
    save_incontext(examples, path)
    return {**{f"examples_{s}": n for s, n in config.counts().items()}, "n_docs": config.n_docs, "out": path}


def _write_corpus(args) -> dict:
    from ..data.loaders import load_dataset, save_dsi_jsonl

    ds = load_dataset(args.data)
    save_dsi_jsonl(ds, args.out)
    return {"documents": len(ds.documents), **{f"queries_{s}": len(ds.split(s)) for s in ds.splits}, "pairs": len(ds.pairs), "data_hash": ds.data_hash(), "out": args.out}


def _write_docids(args) -> dict:
    from pathlib import Path

    from ..data.docid_assignment import SemanticConfig, build_docid_mapping
    from ..data.loaders import load_dataset
    from ..docids import MAPPING_FILE

    semantic = SemanticConfig(branches=args.branches, leaf_size=args.leaf_size, max_depth=args.max_depth, seed=args.seed).check()
    dataset = load_dataset(args.data)
    mapping = build_docid_mapping(args.scheme, dataset, semantic)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = mapping.write(Path(args.out) / MAPPING_FILE)
    lengths = [len(s) for s in mapping.sequences.values()]
    return {"scheme": mapping.scheme, "documents": len(lengths), "tokens": len(mapping.tokens), "max_length": max(lengths),
            "mean_length": round(sum(lengths) / len(lengths), 3), "data_hash": mapping.data_hash, "out": str(path)}


def handler(args):
    summary = {"corpus": _write_corpus, "niah": _write_niah, "incontext": _write_incontext, "docids": _write_docids}[args.kind](args)
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


VERB = Verb("generate the synthetic corpus (documents, split queries, matched pairs), NIAH trials or in-context retrieval examples, "
            "a multi-token docid mapping (naive, semantic, title), or convert a corpus to DSI JSONL", add_arguments, handler)
