"""Publishing through an outage: retry ``/say`` while it answers 503."""

from __future__ import annotations

import typing as t

from helpers.wait import wait_until

if t.TYPE_CHECKING:
    from helpers.servers import Server


def say_until_answered(server: Server, data: str, timeout: float = 30) -> str:
    """Publish ``data`` over ``/say``, retrying while it answers 503 (Redis away or failing
    over, which says nothing was sent); return the event id."""

    def attempt() -> str | None:
        response = server.post("/say", json={"data": data})
        assert response.status_code in (200, 503), response.text
        return str(response.json()["id"]) if response.status_code == 200 else None

    return t.cast(str, wait_until(attempt, timeout, f"/say {data!r} to be answered"))
