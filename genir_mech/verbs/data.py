"""`genir-mech data [corpus|niah|incontext]`: write a synthetic corpus (or re-export any loadable corpus), NIAH trials or in-context retrieval examples.

    genir-mech data --data synthetic:n_docs=1000,seed=0 --out runs/data/synth      # corpus (the default kind)
    genir-mech data niah --out runs/data/niah --lengths 128,256,512 --depths 0,0.5,1 # -> niah.jsonl
    genir-mech data incontext --out runs/data/incontext --n-docs 16                 # -> incontext.jsonl
"""
from __future__ import annotations

from . import Verb
from .options import data_spec, dataclass_defaults, fraction, non_negative_int, number_list, output_directory, positive_int

KINDS = ("corpus", "niah", "incontext")
# read from the source without importing the generators, so a bad number fails while parsing
NIAH_DEFAULTS = dataclass_defaults("data.niah", "NiahConfig")
INCONTEXT_DEFAULTS = dataclass_defaults("data.incontext", "InContextConfig")


def add_arguments(p):
    p.add_argument("kind", nargs="?", choices=KINDS, default="corpus",
                   help="corpus (default): documents, split queries and pairs; niah: needle-in-a-haystack trials; incontext: in-context retrieval examples")
    p.add_argument("--data", type=data_spec, default="synthetic:n_docs=1000,seed=0",
                   help="data spec: synthetic:n_docs=N,seed=S,attribute_values=V,n_pairs=P | BEIR dir | DSI JSONL dir "
                        "(niah and incontext: the synthetic corpus their haystacks and documents come from)")
    p.add_argument("--out", type=output_directory, required=True,
                   help="directory for documents.jsonl, queries.jsonl and pairs.jsonl (corpus), niah.jsonl or incontext.jsonl")
    p.add_argument("--seed", type=non_negative_int, default=0, help="niah/incontext: seed of the trials or examples (default 0)")
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


def handler(args):
    summary = {"corpus": _write_corpus, "niah": _write_niah, "incontext": _write_incontext}[args.kind](args)
    if not args.json:
        print(" ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


VERB = Verb("generate the synthetic corpus (documents, split queries, matched pairs), NIAH trials or in-context retrieval examples, "
            "or convert a corpus to DSI JSONL", add_arguments, handler)
