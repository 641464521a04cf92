"""The command-line options verbs share, declared once, and the default output folder rule.

    def add_arguments(p): model_arguments(p); query_arguments(p); stage_argument(p); output_arguments(p, "ablate")
    def handler(args): gm, dataset = load_model(args), ...; out = output_dir(args, "ablate")

Each group adds the same flags with the same help everywhere; the matching
config fields are filled by `query_fields` / `pair_fields`.
"""
from __future__ import annotations

from pathlib import Path

from ..models.loading import load_genir, resolve_dataset
from ..patching.engine import DIRECTIONS
from ..errors import GenIRError
from ..patching.pairs import ALIGNMENTS, read_pairs


def model_arguments(p, what: str = "checkpoint directory or hub id", data: bool = True) -> None:
    p.add_argument("--model", required=True, help=what)
    if data:
        p.add_argument("--data", help="data spec (default: the data named in the checkpoint's model_card.json)")
    p.add_argument("--docid-pattern", help="regex with one group matching docid tokens (default @DOC_ID_(.+?)@)")


def query_arguments(p, split: str = "validation", batch_size: int = 64, sample: bool = True) -> None:
    p.add_argument("--split", default=split, help=f"analyse the model's correct queries of this split (default {split})")
    if sample:
        p.add_argument("--max-queries", type=int, help="a seeded random sample of at most N correct queries (default all)")
        p.add_argument("--seed", type=int, default=0, help="seed of the query sample and bootstraps (default 0)")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"queries per forward pass (default {batch_size})")


def stage_argument(p, help: str | None = None) -> None:
    p.add_argument("--stages", help=help or "stage definition: a spec like priming=0-2,bridging=3-5,interaction=6-7 or the stages.json written by "
                                            "`genir-mech stages` (default: three even thirds of the decoder, with a warning)")


def rows_argument(p, default: int, what: str = "rows per forward pass") -> None:
    p.add_argument("--rows-per-forward", type=int, default=default, help=f"{what}: the memory budget (default {default})")


def pair_arguments(p) -> None:
    p.add_argument("--pairs", help="JSONL or CSV of pairs: clean,corrupted[,clean_doc,corrupted_doc] or clean_query_id,corrupted_query_id "
                                   "(default: the dataset's matched pairs)")
    p.add_argument("--n-pairs", type=int, help="use the first N (kept) pairs (default all)")
    p.add_argument("--all-pairs", action="store_true", help="keep pairs even when the model does not rank both documents first")
    p.add_argument("--align", choices=ALIGNMENTS, help="pad the shorter query of a pair at its start or end when tokenizations differ in length "
                                                       "(default: refuse such pairs)")
    p.add_argument("--direction", choices=DIRECTIONS, default="denoise", help="denoise: clean into corrupted (default); noise: corrupted into clean")
    p.add_argument("--pairs-per-batch", type=int, default=64, help="pairs whose source activations are cached together (default 64)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the pairs for confidence intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def output_arguments(p, verb: str, what: str = "one JSON object summarising the result") -> None:
    p.add_argument("--out", help=f"output directory (default {default_out(verb, '<model>')})")
    p.add_argument("--json", action="store_true", help=f"print {what}")


def default_out(verb: str, model: str) -> Path:
    """The one output folder rule: runs/<verb>/<model folder name>."""
    return Path("runs") / verb / Path(model).name


def output_dir(args, verb: str) -> Path:
    return Path(args.out) if args.out else default_out(verb, args.model)


def split_list(text: str | None) -> tuple[str, ...] | None:
    """`a,b, c` -> ("a", "b", "c"); None stays None."""
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def load_model(args, path: str | None = None, self_check: bool = True):
    return load_genir(path or args.model, docid_pattern=getattr(args, "docid_pattern", None), self_check=self_check)


def load_data(args, gm):
    """The dataset named by --data, else the one the checkpoint's model card names."""
    return resolve_dataset(gm, args.data)


def query_fields(args) -> dict:
    """QueryConfig fields from query_arguments."""
    return {"split": args.split, "max_queries": getattr(args, "max_queries", None), "seed": getattr(args, "seed", 0), "batch_size": args.batch_size}


def pair_fields(args) -> dict:
    """PairConfig fields from pair_arguments."""
    return {"n_pairs": args.n_pairs, "all_pairs": args.all_pairs, "align": args.align, "seed": args.seed}


def load_pair_data(args, gm):
    """What the patching pipelines take as data: the pairs of --pairs (read against the dataset, when there is one), else the dataset."""
    try:
        dataset = resolve_dataset(gm, args.data)
    except GenIRError:
        if not args.pairs:
            raise
        dataset = None  # a pairs file of texts (and docids) needs no dataset
    return read_pairs(args.pairs, dataset) if args.pairs else dataset


def print_pair_counts(counts: dict, all_pairs: bool) -> None:
    rule = ("kept: all pairs with two different documents (--all-pairs)" if all_pairs
            else "kept where the model ranks the clean doc first for the clean query and the corrupted doc first for the corrupted query")
    print(f"pairs: {counts['n_used']} used of {counts['n_candidates']} ({counts['n_kept']} {rule})")
