"""Reads that callers asking for the same thing at the same time share.

After a deploy or a network blip, every client of a worker reconnects at once, most of them
with the same ``Last-Event-ID`` (the last event sent before the cut): the Redis broker would
read the same history once per client. With :class:`SharedReads`, the first caller for a key
reads, and those that ask for the same key while its read is in flight wait for it and take
its result (Centrifugo merges identical history reads the same way). Nothing is kept once
the read has returned: a caller that comes later reads afresh, so no result outlives the
moment it was read in.
"""

from __future__ import annotations

import copy
import threading
import typing as t

__all__ = ["SharedReads"]

_T = t.TypeVar("_T")


class _Read(t.Generic[_T]):
    """One read in flight, and what it gave: a result, or the exception it raised."""

    __slots__ = ("_done", "_error", "_result")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._result: tuple[_T] | None = None
        self._error: Exception | None = None

    def run(self, read: t.Callable[[], _T]) -> _T:
        try:
            result = read()
        except Exception as e:
            self._error = e
            raise
        finally:
            self._done.set()
        self._result = (result,)
        return result

    def wait(self) -> tuple[_T] | None:
        """The result, once the read has returned; ``None`` if it failed other than with an
        ``Exception`` (its caller was killed), for the waiter to read itself.

        :raises Exception: a copy of what the read raised, chained from it.
        """
        self._done.wait()
        if self._error is not None:
            raise copy.copy(self._error) from self._error
        return self._result


class SharedReads(t.Generic[_T]):
    """Calls of a read function, one at a time per key, shared by concurrent callers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[t.Hashable, _Read[_T]] = {}

    def read(self, key: t.Hashable, read: t.Callable[[], _T]) -> _T:
        """``read()``, or the result of the call for ``key`` that is in flight.

        :raises Exception: what ``read`` raised (a copy for the callers that waited).
        """
        with self._lock:
            pending = self._reads.get(key)
            if pending is None:
                mine = self._reads[key] = _Read[_T]()
        if pending is not None:
            result = pending.wait()
            return read() if result is None else result[0]
        try:
            return mine.run(read)
        finally:
            with self._lock:
                del self._reads[key]
