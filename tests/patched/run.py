"""Run one case, ``MODULE:CASE``, of this package in this interpreter as it is: by
``__main__`` once it has patched, or alone (``python -m patched.run``) for an interpreter that
does not patch."""

from __future__ import annotations

import importlib
import sys


def run(name: str) -> None:
    """Call the function ``CASE`` of ``patched.MODULE``; print ``ok`` if it returned, so that
    the test can tell a case that ran to its end from one that exited early."""
    module, _, case = name.partition(":")
    getattr(importlib.import_module(f"patched.{module}"), case)()
    print("ok")


if __name__ == "__main__":
    run(sys.argv[1])
