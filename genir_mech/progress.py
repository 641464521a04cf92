"""Progress bars that a caller can silence from outside: `bar` is tqdm unless inside `no_bars()`.

    with no_bars():            # a sweep unit: the sweep's own bar says what runs
        rank(gm, texts)        # its "ranking" bar stays off

Most analyses take a `progress` argument; this covers the bars of helpers deep below them
(the ranking of a split) that no argument reaches.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

from tqdm.auto import tqdm

_SILENT: ContextVar[bool] = ContextVar("genir_no_bars", default=False)


def bar(iterable=None, **kwargs):
    """tqdm(iterable, **kwargs), disabled inside `no_bars()`."""
    if _SILENT.get():
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)


@contextmanager
def no_bars():
    token = _SILENT.set(True)
    try:
        yield
    finally:
        _SILENT.reset(token)
