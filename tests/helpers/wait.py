"""Polling for a condition that another process or thread brings about."""

from __future__ import annotations

import time
import typing as t


def wait_until(predicate: t.Callable[[], t.Any], timeout: float = 10.0, message: str = "") -> t.Any:
    """Poll ``predicate`` until it returns something true, and return that; fail after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}")
        time.sleep(0.02)
