"""`genir-mech` verbs: one module per verb, each a short shell over one pipeline (parse -> config -> load -> run -> print).

    VERB = Verb("one-line help", add_arguments, handler)   # in each verb module; cli.py lists them

Shared options and the default output folder are declared once, in
verbs/options.py. Verbs import pipelines and options, never each other.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verb:
    """A verb's one-line help, the function adding its arguments to a parser, and the handler run on the parsed arguments."""

    help: str
    add_arguments: Callable
    handler: Callable
