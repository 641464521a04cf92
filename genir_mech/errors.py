"""User-facing errors.

A `GenIRError` carries a message meant for a researcher at a terminal: it names
the file, line, model or argument at fault. The CLI prints it without a
traceback; library callers can catch it.
"""


class GenIRError(Exception):
    """Bad input or an unsupported model, explained in the message."""
