"""The baseline peer: Flask, a generator per client and a ``queue.Queue`` per client.

Run under gunicorn with one gevent worker (gevent patches ``queue`` and ``threading``)::

    gunicorn -k gevent -w 1 --worker-connections 20000 flask_queue:app

- ``GET /events``: ``retry:``, then one ``id:``/``data:`` frame per event, written one by
  one as the generator yields them; a heartbeat comment after 15 s of idleness.
- ``POST /say``: JSON ``{"data": <any JSON>}``; a string is sent as is, anything else as
  compact JSON. A client whose queue of 1000 is full misses the event (``dropped``).
- ``GET /stats``: ``{"consumers": n, "published": n, "dropped": n}``.
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import threading
import typing as t

from flask import Flask, Response, jsonify, request

app = Flask(__name__)

_clients: set[queue.Queue[bytes]] = set()
_lock = threading.Lock()
_ids = itertools.count(1)
_counts = {"published": 0, "dropped": 0}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@app.get("/events")
def events() -> Response:
    mailbox: queue.Queue[bytes] = queue.Queue(maxsize=1000)
    with _lock:
        _clients.add(mailbox)

    def frames() -> t.Iterator[bytes]:
        try:
            yield b"retry: 3000\n\n"
            while True:
                try:
                    yield mailbox.get(timeout=15)
                except queue.Empty:
                    yield b": heartbeat\n\n"
        finally:
            with _lock:
                _clients.discard(mailbox)

    return Response(
        frames(),
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache"},
    )


@app.post("/say")
def say() -> Response:
    data = request.get_json()["data"]
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    event_id = next(_ids)
    frame = (
        f"id: {event_id}\n" + "".join(f"data: {line}\n" for line in _LINE_BREAK.split(text)) + "\n"
    )
    encoded = frame.encode()
    with _lock:
        mailboxes = list(_clients)
        _counts["published"] += 1
    for mailbox in mailboxes:
        try:
            mailbox.put_nowait(encoded)
        except queue.Full:
            _counts["dropped"] += 1
    return jsonify(id=str(event_id))


@app.get("/stats")
def stats() -> Response:
    return jsonify(consumers=len(_clients), **_counts)
