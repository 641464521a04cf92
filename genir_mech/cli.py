"""`genir-mech`: the command-line entry point. Each verb is a thin shell over a library function.

Errors a user can fix (`GenIRError`) are printed as one message without a
traceback, with exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import GenIRError
from .verbs import VERBS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genir-mech", description="Mechanistic analysis of generative IR models.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        verb.add_arguments(p)
        p.set_defaults(run=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
    except GenIRError as exc:
        print(f"genir-mech {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"genir-mech {args.verb}: interrupted; rerun the same command to resume where supported", file=sys.stderr)
        return 130
    if result is not None and getattr(args, "json", False):
        print(json.dumps(result, indent=None, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
