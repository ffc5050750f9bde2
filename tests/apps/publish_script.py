"""A script that publishes outside any request, as a cron job or a task queue's worker does:
an app of its own, the broker from ``SSE_BROKER_URL``; it prints the event's id. Run as
``python -m apps.publish_script`` from tests/."""

from __future__ import annotations

from flask import Flask

from sse_flask import SSE


def main() -> None:
    app = Flask("worker")
    sse = SSE(app)
    print(sse.publish({"job": 7}, event="done", channel="jobs"))


if __name__ == "__main__":
    main()
