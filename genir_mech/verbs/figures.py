"""`genir-mech figures RESULTS_DIR`: redraw every figure and table whose result tables a results directory holds.

    genir-mech figures runs/paper/dsi-synth
    genir-mech figures runs/patch/dsi-synth            # heatmaps of every *_summary.csv
    genir-mech figures runs --out runs/report          # result tables found anywhere below runs/, if unique
"""
from __future__ import annotations

from pathlib import Path

from . import Verb
from .options import output_directory


def results_directory(text: str) -> str:
    """The results directory must exist (checked while parsing, before matplotlib loads)."""
    if not Path(text).is_dir():
        from argparse import ArgumentTypeError
        raise ArgumentTypeError(f"{text}: no such results directory")
    return text


def add_arguments(p):
    # the list of result names lives in pipelines.rendering, which imports matplotlib: not read here, to keep parsing fast
    p.add_argument("results_dir", metavar="RESULTS_DIR", type=results_directory,
                   help="directory holding result tables (the <name>.csv files the analysis verbs write, patching *_summary.csv)")
    p.add_argument("--out", type=output_directory, help="where figures/ and tables/ go (default RESULTS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object listing what was written")


def handler(args):
    from ..pipelines.rendering import redraw  # matplotlib: only once the arguments are valid

    made = redraw(args.results_dir, args.out)
    if not args.json:
        for name, path in made.items():
            print(f"{name:<28} {path}")
    return made


VERB = Verb("Redraw the figures (Fig. 3-5, ablation, circuit, stages, swap, patching heatmaps) and Tables 2-6 from a results directory", add_arguments, handler)
