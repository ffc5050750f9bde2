"""Scripts run in a fresh interpreter, for what cannot be undone inside pytest's process
(gevent's monkey-patching)."""

from __future__ import annotations

import subprocess
import sys


def run_ok(script: str) -> None:
    """Run ``script`` in a fresh interpreter; it must end by printing ``ok``."""
    result = subprocess.run(
        [sys.executable, "-c", script + "\nprint('ok')\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
