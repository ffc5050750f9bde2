"""The sse-starlette peer: an ``asyncio.Queue`` per client, served by uvicorn (uvloop,
httptools) with one worker::

    uvicorn starlette_app:app --loop uvloop --http httptools --workers 1

- ``GET /events``: sse-starlette's ``EventSourceResponse`` over a generator reading the
  client's queue (its default ping comment every 15 s).
- ``POST /say``: JSON ``{"data": <any JSON>}``; a string is sent as is, anything else as
  compact JSON. A client whose queue of 1000 is full misses the event (``dropped``).
- ``GET /stats``: ``{"consumers": n, "published": n, "dropped": n}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import typing as t

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

_clients: set[asyncio.Queue[ServerSentEvent]] = set()
_ids = itertools.count(1)
_counts = {"published": 0, "dropped": 0}


async def events(request: Request) -> EventSourceResponse:
    mailbox: asyncio.Queue[ServerSentEvent] = asyncio.Queue(maxsize=1000)
    _clients.add(mailbox)

    async def frames() -> t.AsyncIterator[ServerSentEvent]:
        try:
            while True:
                yield await mailbox.get()
        finally:
            _clients.discard(mailbox)

    return EventSourceResponse(frames(), headers={"Cache-Control": "no-cache"})


async def say(request: Request) -> JSONResponse:
    data = (await request.json())["data"]
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    event = ServerSentEvent(data=text, id=str(next(_ids)))
    _counts["published"] += 1
    for mailbox in list(_clients):
        try:
            mailbox.put_nowait(event)
        except asyncio.QueueFull:
            _counts["dropped"] += 1
    return JSONResponse({"id": event.id})


async def stats(request: Request) -> JSONResponse:
    return JSONResponse({"consumers": len(_clients), **_counts})


app = Starlette(
    routes=[Route("/events", events), Route("/say", say, methods=["POST"]), Route("/stats", stats)]
)
