"""`genir-mech`: the command-line entry point. Each verb is a thin shell over one pipeline (genir_mech.verbs).

Every argument is validated while parsing (verbs/options.py holds the
argument types), before any model loads; this module and the verb modules
import no torch, transformers or nnsight at module level, so a bad argument
costs a fraction of a second. Errors a user can fix (bad arguments and
`GenIRError`) are printed as one line without usage or traceback, with exit
code 2; warnings (e.g. no stage definition given) as one line each.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings

from .errors import GenIRError, Terminated
from .verbs import ablate, attribute, circuit, contributions, data, demo, evaluate, figures, heads, lens, patch, read, show, stages, study, swap, sweep, train

VERBS = {
    "demo": demo.VERB, "data": data.VERB, "train": train.VERB, "eval": evaluate.VERB, "stages": stages.VERB, "swap": swap.VERB,
    "contributions": contributions.VERB, "lens": lens.VERB, "ablate": ablate.VERB, "circuit": circuit.VERB, "read": read.VERB, "figures": figures.VERB,
    "patch": patch.VERB, "attribute": attribute.VERB, "heads": heads.VERB, "sweep": sweep.VERB, "show": show.VERB, "study": study.VERB,
}


class UsageError(Exception):
    """A bad command line: `prog: error: message`, printed by `main` as one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line (`genir-mech VERB: error: ...`) without the usage block, so scripts can grep it."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: error: {message}")


def version_text() -> str:
    """`genir-mech --version`: the suite's version and those of the libraries its results depend on (read from package metadata, nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from .version import __version__
    from .vocabulary import RESULT_PACKAGES

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = [p for p in RESULT_PACKAGES if p != "genir_mech"]
    return f"genir-mech {__version__} (python {sys.version.split()[0]}; " + ", ".join(f"{p} {installed(p)}" for p in libraries) + ")"


class VersionAction(argparse.Action):
    """--version: prints `version_text()` unwrapped (one line, for bug reports), computed only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the genir-mech version and the versions of the libraries results depend on, and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `genir-mech` argument parser: one sub-command per verb."""
    parser = OneLineParser(prog="genir-mech", description="Mechanistic analysis of generative IR models.")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        verb.add_arguments(p)
        p.set_defaults(handler=verb.handler)
    return parser


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse (validating every argument), run the verb's handler, print user errors as one line (exit 2) without a traceback."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2

    from .provenance import run_context  # pandas: only once the arguments are valid

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"genir-mech {args.verb}: warning: {message}", file=file or sys.stderr)

    with warnings.catch_warnings(), run_context(command=["genir-mech", *(sys.argv[1:] if argv is None else argv)]):
        warnings.showwarning = one_line
        in_main_thread = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
        previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
        try:
            result = args.handler(args)
        except GenIRError as exc:
            # a message may quote a multi-line file excerpt; the contract is one line
            print(f"genir-mech {args.verb}: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            how, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
            print(f"genir-mech {args.verb}: {how}; nothing partial was kept: rerun the same command to resume where supported", file=sys.stderr)
            return code
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    if result is not None and getattr(args, "json", False):
        print(json.dumps(result, indent=None, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
