"""The ASGI rows of benchmarks/viewstream.py, on uvicorn, with the same routes as
viewstream_flask.py: ``starlette_app`` uses sse-starlette's ``EventSourceResponse``,
``fastapi_app`` FastAPI's own (``response_class=EventSourceResponse``, FastAPI 0.135+).
"""

from __future__ import annotations

import asyncio
import time
import typing as t

from fastapi import FastAPI
from fastapi.sse import EventSourceResponse as FastAPIEventSourceResponse
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CLOSED: dict[str, float] = {}


async def _items(count: int) -> t.AsyncIterator[str]:
    for _ in range(count):
        yield str(time.time())


async def _held(key: str) -> t.AsyncIterator[str]:
    try:
        yield str(time.time())
        await asyncio.sleep(3600)
    finally:
        CLOSED[key] = time.time()


async def starlette_items(request: Request) -> EventSourceResponse:
    return EventSourceResponse(_items(int(request.query_params.get("n", "100"))))


async def starlette_hold(request: Request) -> EventSourceResponse:
    return EventSourceResponse(_held(request.query_params["id"]))


async def closed(request: Request) -> JSONResponse:
    return JSONResponse(CLOSED)


starlette_app = Starlette(
    routes=[
        Route("/items", starlette_items),
        Route("/hold", starlette_hold),
        Route("/closed", closed),
    ]
)

fastapi_app = FastAPI()


@fastapi_app.get("/items", response_class=FastAPIEventSourceResponse)
async def fastapi_items(n: int = 100) -> t.AsyncIterator[str]:
    async for item in _items(n):
        yield item


@fastapi_app.get("/hold", response_class=FastAPIEventSourceResponse)
async def fastapi_hold(id: str) -> t.AsyncIterator[str]:
    async for item in _held(id):
        yield item


@fastapi_app.get("/closed")
async def fastapi_closed() -> dict[str, float]:
    return CLOSED
