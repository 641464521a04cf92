"""User-facing errors.

A `GenIRError` carries a message meant for a researcher at a terminal: it names
the file, line, model or argument at fault. The CLI prints it without a
traceback; library callers can catch it.
"""


class GenIRError(Exception):
    """Bad input or an unsupported model, explained in the message."""


class NotApplicable(GenIRError):
    """An analysis that cannot apply to this model as it is (e.g. the paper's three-stage circuit on a model
    with fewer located stages). A sweep records the unit as skipped with this message as its reason and
    runs the others; called directly, it is an error like any other."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up that runs on an interrupt (staging folders removed,
    locks released, training state kept from the last finished epoch) runs on a termination too."""
