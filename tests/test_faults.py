"""What the in-process broker keeps across a worker SIGKILL: nothing of its history, and it
says so. The table of what each broker guarantees across which faults (docs/deployment.md)
points here."""

from __future__ import annotations

import json
import os
import signal
import typing as t

from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until


def test_memory_broker_worker_sigkill_says_missed(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient]
) -> None:
    """The killed worker's history dies with it: a client resuming on its replacement gets
    ``event: missed`` naming its last id, then what the new worker holds, then live events."""
    server = serve(env={"SSE_HEARTBEAT": "1"})
    (victim,) = server.worker_pids()
    client = stream(server.url)
    last = server.say("before the kill")
    assert [event.id for event in client.take(1)] == [last]
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: server.worker_pids() and victim not in server.worker_pids(),
        30,
        "a replacement worker",
    )
    after = server.say("on the new worker")
    resumed = stream(server.url, last_event_id=last)
    missed, replayed = resumed.take(2)
    assert missed.event == "missed" and json.loads(missed.data)["last_event_id"] == last
    assert (replayed.id, replayed.data) == (after, "on the new worker")
    live = server.say("live")
    assert [event.id for event in resumed.take(1)] == [live]
