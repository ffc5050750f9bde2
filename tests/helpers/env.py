"""Where the tests run: the checkout's paths, free ports, and the real parts a test needs.

A missing real part (redis-server, Chromium) skips its tests locally and fails them when
``CI=true``, so that CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent


def need(what: str, available: object) -> None:
    """Skip (locally) or fail (in CI) unless ``available``."""
    if not available:
        if IN_CI:
            pytest.fail(f"{what} is missing, and CI must run every test")
        pytest.skip(f"{what} is missing")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
