"""A subscription's wake-up under gevent's monkey-patching, where it is a bare greenlet
switch rather than an Event (sse_flask.broker.wakeup.GreenletWakeup).

Monkey-patching cannot be undone inside pytest's process, so each case (a function of
tests/patched/fanout_cases.py) runs in a fresh interpreter that patches first, as gunicorn's
gevent worker does.
"""

from __future__ import annotations

import pytest
from helpers.patched import run_case

#: Each case's description (its test id), and its function in tests/patched/fanout_cases.py.
CASES = {
    "a timed wait with nothing pending returns empty after its timeout": "timed_wait_times_out",
    "a frame published by another greenlet wakes an untimed wait": "publish_from_greenlet_wakes",
    "a frame published by a native OS thread wakes the waiting greenlet": (
        "publish_from_os_thread_wakes"
    ),
    "what arrived before the wait is returned without waiting": "pending_frames_return_at_once",
    "wake() ends a pending wait with nothing, and the next wait waits again": "wake_ends_a_wait",
    "a held subscription gathers frames and is released within the write interval": (
        "held_subscription_is_released"
    ),
    "a held subscription is released once the hub has nothing else to run, before the "
    "write interval": "held_subscription_is_released_once_the_hub_is_idle",
    "a publish that finds the hold over releases it, though the ticker has not run": (
        "publish_releases_an_overdue_hold"
    ),
    "closing wakes a held wait at once": "close_wakes_a_held_wait",
    "a parked subscription's wake-ups run its callback in the hub, once for several": (
        "parked_wakeup_runs_in_the_hub_once"
    ),
    "a frame published by a native OS thread runs a parked subscription's callback": (
        "parked_wakeup_from_os_thread"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_greenlet_wakeup(case: str) -> None:
    run_case(f"fanout_cases:{CASES[case]}")


def test_gevent_imported_without_monkey_patching_uses_plain_threading() -> None:
    """An app that imports gevent (a library may) but does not patch gets the thread-based
    wait, and no gevent socket watcher (only the look at the socket before each heartbeat
    that threaded servers get), instead of an AttributeError for gevent.monkey."""
    run_case("unpatched_cases:plain_threading", patch=False)
