"""`genir-mech figures RESULTS_DIR`: draw the paper's figures and write Tables 2-6 (Markdown and LaTeX) from saved results.

    genir-mech figures runs/paper/dsi-synth
    genir-mech figures runs --out runs/report      # result tables found anywhere below runs/, if unique
"""
from __future__ import annotations

from ..figures.report import RESULT_NAMES, render_results
from . import Verb


def add_arguments(p):
    p.add_argument("results_dir", metavar="RESULTS_DIR", help=f"directory holding result tables ({', '.join(n + '.csv' for n in RESULT_NAMES)})")
    p.add_argument("--out", help="where figures/ and tables/ go (default RESULTS_DIR)")
    p.add_argument("--json", action="store_true", help="print one JSON object listing what was written")


def run(args):
    made = render_results(args.results_dir, args.out)
    if not args.json:
        for name, path in made.items():
            print(f"{name:<22} {path}")
    return made


VERB = Verb("Draw Fig. 3-5 (seaborn) and write Tables 2-6 as Markdown and LaTeX from a results directory", add_arguments, run)
