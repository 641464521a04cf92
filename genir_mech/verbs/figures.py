"""`genir-mech figures RESULTS_DIR`: redraw every figure and table whose result tables a results directory holds.

    genir-mech figures runs/paper/dsi-synth
    genir-mech figures runs/patch/dsi-synth            # heatmaps of every *_summary.csv
    genir-mech figures runs --out runs/report          # result tables found anywhere below runs/, if unique
"""
from __future__ import annotations

from ..pipelines.rendering import RESULT_NAMES, redraw
from . import Verb


def add_arguments(p):
    p.add_argument("results_dir", metavar="RESULTS_DIR", help=f"directory holding result tables ({', '.join(n + '.csv' for n in RESULT_NAMES)}, patching *_summary.csv)")
    p.add_argument("--out", help="where figures/ and tables/ go (default RESULTS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object listing what was written")


def handler(args):
    made = redraw(args.results_dir, args.out)
    if not args.json:
        for name, path in made.items():
            print(f"{name:<28} {path}")
    return made


VERB = Verb("Redraw the figures (Fig. 3-5, ablation, circuit, stages, swap, patching heatmaps) and Tables 2-6 from a results directory", add_arguments, handler)
