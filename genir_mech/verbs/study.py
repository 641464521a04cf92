"""`genir-mech study pretraining`: what makes the decoder stages appear, pretraining or tokenization?

    genir-mech study pretraining                                   # trains what is missing (~2 h on 2 CPU cores), then analyses
    genir-mech study pretraining --models-dir /work/study --no-train --models t5-scratch,t5-span

Four GenIR models on one corpus and recipe (pipelines/study_pretraining.py); results, figure and table in --out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..vocabulary import STUDY_MODELS
from . import Verb
from .options import bootstrap_count, name_list, output_directory, positive_int, split_list

STUDIES = ("pretraining",)
MODELS = STUDY_MODELS
DEFAULT_MODELS_DIR = "runs/pretraining-study/models"
DEFAULT_OUT = "paper/pretraining-study"


def existing_directory(text: str) -> str:
    """A models folder named on the command line must exist: a typo must not start hours of training in a new folder."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"{text}: no such directory (omit --models-dir to build the models in {DEFAULT_MODELS_DIR})")
    return text


def add_arguments(p):
    p.add_argument("study", choices=STUDIES, help="which study: pretraining = four models, stages with and without pretraining / subword tokens")
    p.add_argument("--models-dir", type=existing_directory, help=f"where the study's models are trained or found (default {DEFAULT_MODELS_DIR}, "
                   "created when missing); t5-span is the embedded checkpoints/dsi-synth")
    p.add_argument("--out", type=output_directory, default=DEFAULT_OUT, help=f"results, figure and table (default {DEFAULT_OUT})")
    p.add_argument("--models", type=name_list(MODELS, "study models"), default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    p.add_argument("--snapshot", type=name_list(MODELS, "study models"), help="models whose training is still running elsewhere: analyse "
                   "the best checkpoint saved so far (history from its resume state) instead of training them")
    p.add_argument("--no-train", action="store_true", help="analyse only models already trained; a missing one is an error")
    p.add_argument("--max-queries", type=positive_int, default=256, help="correct validation queries per analysis (default 256)")
    p.add_argument("--bootstrap", type=bootstrap_count, default=100, help="stage-boundary bootstrap resamples (default 100)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def handler(args):
    from ..pipelines.study_pretraining import StudyConfig, run_study  # torch and transformers: only once the arguments are valid

    config = StudyConfig(models=split_list(args.models), max_queries=args.max_queries, bootstrap=args.bootstrap, train=not args.no_train,
                         snapshots=split_list(args.snapshot) or ())
    summary = run_study(args.models_dir or DEFAULT_MODELS_DIR, args.out, config, progress=not args.json)
    if not args.json:
        for name, r in summary["models"].items():
            stages = ", ".join(f"{n} {a}-{b}" for n, (a, b) in zip(r["stage_names"] or [], r["stage_spans"] or [])) or "none"
            print(f"{name}: Hits@1 {r['hits@1']:.3f}, {r['epochs']} epochs ({r['stopped_by']}); stages: {stages}")
        print(f"summary: {Path(args.out) / 'summary.json'}   report: {Path(args.out) / 'SUMMARY.md'}")
    return summary


VERB = Verb("Run a study end to end: pretraining = what makes the decoder stages appear (four models trained if missing, analysed, compared with the paper)",
            add_arguments, handler)
