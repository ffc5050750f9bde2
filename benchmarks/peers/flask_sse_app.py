"""The flask-sse peer: the ``flask_sse`` blueprint (Redis pub/sub, one Redis connection per
stream) under gunicorn with one gevent worker. ``REDIS_URL`` comes from the environment.

- ``GET /events``: flask-sse's own stream view, on its default channel ``sse``.
- ``POST /say``: JSON ``{"data": <any JSON>}``, published with ``sse.publish`` (which, as
  flask-sse does, opens a Redis client for each publish).
- ``GET /stats``: ``{"consumers": n}``, the subscribers Redis counts on the channel.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, jsonify, request
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/events")
_redis = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.post("/say")
def say() -> Response:
    sse.publish(request.get_json()["data"])
    return jsonify(ok=True)


@app.get("/stats")
def stats() -> Response:
    ((_, count),) = _redis.pubsub_numsub("sse")
    return jsonify(consumers=count)
