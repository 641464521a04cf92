"""Where the executor's chunks of rows run: the seam a distributed sweep backend plugs into.

    backend = LocalBackend()
    for result in backend.map(forward, chunks): ...     # in this process, in order, one chunk at a time

A backend only needs `map(fn, chunks)`, returning the results of `fn` on each
chunk in the order of `chunks`; `LocalBackend` is the default. A backend that
runs chunks elsewhere (another process, another machine) implements the same
method; the executor does not change.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar, runtime_checkable

Chunk = TypeVar("Chunk")
Result = TypeVar("Result")


@runtime_checkable
class Backend(Protocol):
    """Runs `fn` on every chunk and yields the results in chunk order.

    Example:
        >>> class Recording(LocalBackend):
        ...     def map(self, fn, chunks):
        ...         chunks = list(chunks); print(len(chunks), "chunks"); return super().map(fn, chunks)
        >>> InterventionExecutor(gm, groups, backend=Recording())
    """

    def map(self, fn: Callable[[Chunk], Result], chunks: Iterable[Chunk]) -> Iterator[Result]: ...


class LocalBackend:
    """In-process and lazy: a chunk runs when its result is consumed, so only one chunk's rows are in memory.

    Example:
        >>> list(LocalBackend().map(lambda c: c * 2, [1, 2, 3]))
        [2, 4, 6]
    """

    def map(self, fn: Callable[[Chunk], Result], chunks: Iterable[Chunk]) -> Iterator[Result]:
        for chunk in chunks:
            yield fn(chunk)
