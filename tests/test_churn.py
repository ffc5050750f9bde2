"""Churn without loss, small: ``benchmarks/churn.py`` with 100 clients that drop and resume
with Last-Event-ID while events are published at a steady rate, 15 s per broker: through a
graceful reload (in-process broker), a SIGKILLed worker and a Redis restart (Redis broker, four
workers; another worker SIGKILLed while Redis is away, so that its replacement starts without
it). Nothing may be lost, duplicated or reordered; gaps only where an ``event: missed`` notice
announces them; no traceback in the servers' logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.env import need

pytestmark = pytest.mark.redis

CHURN = Path(__file__).resolve().parent.parent / "benchmarks" / "churn.py"


def test_churn_loses_nothing_through_reload_sigkill_and_redis_restart() -> None:
    need("redis-server", shutil.which("redis-server"))
    command = [
        sys.executable,
        str(CHURN),
        "--clients",
        "100",
        "--seconds",
        "15",
        "--broker",
        "both",
        "--soak-seconds",
        "0",
        "--drain",
        "15",
        "--json",
        "--timeout",
        "100",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert run.stdout, f"churn.py printed no results (exit {run.returncode}):\n{run.stderr[-5000:]}"
    report = json.loads(run.stdout)
    results = report["results"]
    details = run.stderr[-3000:] + "\n" + json.dumps(results, indent=1)[:6000]

    problems = []
    for broker, result in results.items():
        for key in ("lost", "duplicated", "out_of_order", "wrong_channel", "never_connected"):
            if result[key]:
                problems.append(f"{broker}: {key.replace('_', ' ')} {result[key]}")
        if result["server_tracebacks"]:
            problems.append(
                f"{broker}: tracebacks in the server's log {result['server_tracebacks']}"
            )
        problems += [f"{broker}: {example}" for example in result["examples"][:3]]
    assert not problems, "\n".join(problems) + "\n\n" + details

    # The run did churn, through its faults, and what was expected arrived, but for the gaps
    # that a missed notice announced.
    for result in results.values():
        assert result["drops"] >= 50 and result["connects"] >= 150, details
        assert result["published"] >= 300, details
        assert result["received"] + result["announced_gaps"] == result["expected"], details
        assert result["received"] >= 0.9 * result["expected"], details
    memory, redis = results["memory"], results["redis"]
    assert any("reload" in fault for fault in memory["faults"]), details
    # A reload starts a worker with an empty history: every client resuming there is told.
    assert memory["missed_notices"] >= 100, details
    assert any("SIGKILL" in fault for fault in redis["faults"]), details
    assert any("redis-server killed" in fault for fault in redis["faults"]), details
    assert redis["publish_attempts_failed"].get("503", 0) > 0, (
        "no publish met the Redis outage\n" + details
    )
    assert report["ok"] and run.returncode == 0, details
