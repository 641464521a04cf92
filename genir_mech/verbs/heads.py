"""`genir-mech heads`: retrieval heads of a decoder-only model (Wu et al. retrieval score, masking, QRHead), and `heads compare`.

    genir-mech heads detect --model lm-niah --json                       # retrieval scores, top-k vs random-k masking (both masks), QRHead table
    genir-mech heads detect --model lm-niah --mask uniform               # mask heads only Wu et al.'s way (uniform attention)
    genir-mech heads qr-retrieve --model lm-niah --json                  # QR-retriever vs BM25 vs the model's answer (nDCG@10, R@1, R@5)
    genir-mech heads detect --model Qwen/Qwen2.5-0.5B --data DIR         # DIR/niah.jsonl, DIR/incontext.jsonl (genir-mech data niah|incontext)
    genir-mech heads compare --json                                       # the four default models side by side (pipelines.heads_compare)
    genir-mech heads compare --models dsi-synth lm-niah --out runs/heads-compare

Data is generated from --seed unless --data names a folder with niah.jsonl and incontext.jsonl.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import Verb
from .options import checkpoint, model_action, non_negative_int, output_arguments, output_dir, positive_int, revision_argument

ACTIONS = ("detect", "qr-retrieve", "compare")
MASK_CHOICES = ("uniform", "remove", "both")  # heads.masking.MASKS, or both of them


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers, e.g. 128,256,512") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers, e.g. 128,256,512")
    return values


def _depth_tuple(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated depths between 0 and 1, e.g. 0,0.5,1") from None
    if not values or min(values) < 0 or max(values) > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated depths between 0 and 1, e.g. 0,0.5,1")
    return values


def _data_folder(text: str) -> str:
    from pathlib import Path

    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such data folder (expected niah.jsonl / incontext.jsonl in it)")
    return text


def add_arguments(p):
    p.add_argument("action", choices=ACTIONS, help="detect: retrieval scores + masking + QRHead table; qr-retrieve: evaluate the QR-retriever; "
                   "compare: the query-reading heads of several GenIR / NIAH models side by side")
    p.add_argument("--model", type=checkpoint, action=model_action,
                   help="detect, qr-retrieve: decoder-only checkpoint directory, embedded checkpoint (e.g. lm-niah) or hub id (Llama, Qwen2, GPT-2)")
    revision_argument(p)
    p.add_argument("--models", nargs="+", type=checkpoint, help="compare: checkpoints to compare (default: the embedded checkpoints "
                   "dsi-synth lm-dsi-synth t5-niah lm-niah)")
    p.add_argument("--n-pairs", type=positive_int, default=32, help="compare: clean/corrupted pairs per model (default 32)")
    p.add_argument("--n-queries", type=positive_int, default=64, help="compare: correct queries per GenIR model for the lens, stages and Hits@1 (default 64)")
    p.add_argument("--ks", type=_int_tuple, help="compare: heads masked in the masking curves (default 1,2,4,... up to a third of the heads, at most 16)")
    p.add_argument("--data", type=_data_folder, help="folder with niah.jsonl and incontext.jsonl (default: generated from --seed)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the generated data and the random head draws (default 0)")
    p.add_argument("--lengths", type=_int_tuple, help="NIAH context lengths of generated data (default 128,256,512; compare: 128,256)")
    p.add_argument("--depths", type=_depth_tuple, help="NIAH needle depths of generated data (default 0,0.25,0.5,0.75,1; compare: 0,0.5,1)")
    p.add_argument("--trials-per-cell", type=positive_int, help="NIAH trials per length x depth cell (default 2; compare: 3)")
    p.add_argument("--top-k", type=positive_int, help="detect: heads masked (default: the retrieval heads, at most half the non-retrieval heads)")
    p.add_argument("--random-draws", type=positive_int, default=10,
                   help="independent random head sets of the same size as the top-k, drawn from the other heads (default 10)")
    p.add_argument("--mask", choices=MASK_CHOICES, help="how heads are masked: uniform (the head attends uniformly, Wu et al.'s masking), "
                   "remove (its output is zero) or both (detect's default; compare: one of them, default uniform)")
    p.add_argument("--qr-top-k", type=positive_int, help="QR heads selected (default min(16, max(2, heads // 4)))")
    p.add_argument("--n-detection", type=positive_int, default=32, help="labelled in-context examples of generated data (default 32)")
    p.add_argument("--n-test", type=positive_int, default=64, help="held-out in-context examples of generated data (default 64)")
    p.add_argument("--n-docs", type=positive_int, default=16, help="documents per in-context example of generated data (default 16)")
    p.add_argument("--batch-size", type=positive_int, help="prompts per forward pass (default 8; compare: 32)")
    p.add_argument("--attention", choices=("auto", "recompute", "eager"), default="auto", help="attention rows: recomputed from queries/keys or eager weights")
    output_arguments(p, "heads", "one JSON object with the summary")


def _given(args, **defaults) -> dict:
    """The NIAH grid options the user gave, else the action's own defaults."""
    return {name: getattr(args, name) if getattr(args, name) is not None else value for name, value in defaults.items()}


def compare_handler(args):
    from ..errors import GenIRError

    if args.model or args.revision:
        raise GenIRError(f"heads compare takes --models (one or more checkpoints), not {'--model' if args.model else '--revision'}")
    from ..pipelines.heads_compare import DEFAULT_MODELS, CompareConfig, check_models, load_models, run_heads_compare  # torch: once valid

    if args.mask == "both":
        raise GenIRError("heads compare masks heads one way per run: --mask uniform (the default) or --mask remove")
    paths = check_models(args.models or list(DEFAULT_MODELS), defaults=not args.models)
    out = Path(args.out) if args.out else Path("runs") / "heads-compare"
    config = CompareConfig(seed=args.seed, n_pairs=args.n_pairs, n_queries=args.n_queries, ks=args.ks, random_draws=args.random_draws,
                           mask=args.mask or "uniform",
                           **_given(args, lengths=(128, 256), depths=(0.0, 0.5, 1.0), trials_per_cell=3, batch_size=32))
    summary = run_heads_compare(load_models(paths), None, out, config, progress=not args.json)
    if not args.json:
        print(Path(summary["_tables"][0]).read_text())
        print(f"summary: {out / 'SUMMARY.md'}")
    return {name: s for name, s in summary.items() if not name.startswith("_")}


def handler(args):
    if args.action == "compare":
        return compare_handler(args)
    from ..errors import GenIRError

    if not args.model:
        raise GenIRError(f"heads {args.action} needs --model (a decoder-only checkpoint directory or hub id)")
    from ..models.loading import load_lm
    from ..pipelines.heads import HeadsConfig, run_heads_detect, run_qr_retrieve  # torch: only once the arguments are valid

    out = output_dir(args, "heads" if args.action == "detect" else "heads-qr")
    gm = load_lm(args.model, revision=args.revision)
    grid = _given(args, lengths=(128, 256, 512), depths=(0.0, 0.25, 0.5, 0.75, 1.0), trials_per_cell=2, batch_size=8)
    masks = ("uniform", "remove") if args.mask in (None, "both") else (args.mask,)
    config = HeadsConfig(seed=args.seed, **grid, top_k=args.top_k,
                         random_draws=args.random_draws, masks=masks, qr_top_k=args.qr_top_k, n_detection=args.n_detection, n_test=args.n_test, n_docs=args.n_docs,
                         attention=args.attention)
    run = run_heads_detect if args.action == "detect" else run_qr_retrieve
    summary = run(gm, args.data, out, config, progress=not args.json)
    if not args.json:
        for key, value in summary.items():
            print(f"{key}: {value}")
    return summary


VERB = Verb("Retrieval heads of a decoder-only model: Wu et al. retrieval score with top-k vs random-k masking; QRHead detection and QR-retriever; "
            "compare: query-reading heads of GenIR and NIAH models of both architectures side by side", add_arguments, handler)
