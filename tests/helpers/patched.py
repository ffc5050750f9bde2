"""Run a case of the ``patched`` package (tests/patched) in a fresh interpreter, from pytest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def run_case(case: str, *, patch: bool = True) -> None:
    """Run ``case`` (``MODULE:FUNCTION`` of tests/patched) in a fresh interpreter,
    monkey-patched first unless ``patch`` is false; it must run to its end, and its traceback
    is the failure's message when it does not."""
    runner = "patched" if patch else "patched.run"
    result = subprocess.run(
        [sys.executable, "-m", runner, case],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TESTS,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
