"""``sse.start_job(...)``, live on ``sse-flask serve``: the job's stream from its first event,
resumed after a drop with every part once, ended by the server after ``done``, ``error`` or
``cancelled``; its events kept whatever ``SSE_HISTORY`` trims, for ``SSE_JOB_RETENTION``;
with the in-process broker and with Redis and two workers. The app is tests/apps/jobs_app.py.
"""

from __future__ import annotations

import itertools
import json
import time
import typing as t
from pathlib import Path

import pytest
import requests
from flask import Flask, g
from helpers.redis import RedisServer
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

from sse_flask import SSE

APP = "apps.jobs_app:create_app"
#: The publish token the servers require: /say is closed without one.
TOKEN = "jobs-tests-token"
_names = itertools.count(1)


class Jobs(t.NamedTuple):
    """A server of jobs_app, and the file its jobs write what happened to."""

    server: Server
    notes: Path
    redis: RedisServer | None

    def start(
        self, parts: int, pause: float = 0.0, fail: bool = False
    ) -> tuple[str, str, str, str]:
        """Start a job; its channel, token, name, and the worker that runs it."""
        name = f"job-{next(_names)}"
        response = self.server.post(
            "/jobs", json={"name": name, "parts": parts, "pause": pause, "fail": fail}
        )
        assert response.status_code == 200, response.text
        return (
            response.json()["channel"],
            response.json()["token"],
            name,
            response.headers["X-Worker"],
        )

    def happened(self) -> list[str]:
        return self.notes.read_text().splitlines() if self.notes.exists() else []


@pytest.fixture
def jobs_env() -> dict[str, str]:
    """Settings for the ``jobs`` server; a test parametrizes it to change them."""
    return {}


@pytest.fixture(params=["memory", "redis"])
def jobs(
    request: pytest.FixtureRequest,
    serve: t.Callable[..., Server],
    tmp_path: Path,
    jobs_env: dict[str, str],
) -> Jobs:
    """jobs_app on one worker with the in-process broker, or on two sharing a Redis."""
    notes = tmp_path / "jobs.log"
    env = {"SSE_HEARTBEAT": "1", "JOBS_LOG": str(notes), "SSE_PUBLISH_TOKEN": TOKEN, **jobs_env}
    if request.param == "memory":
        return Jobs(serve(app=APP, env=env), notes, None)
    redis = request.getfixturevalue("redis_server")
    return Jobs(serve(app=APP, workers=2, broker=redis.url, env=env), notes, redis)


def open_job(
    jobs: Jobs,
    channel: str,
    token: str,
    *,
    last_event_id: str | None = None,
    avoid: str | None = None,
) -> StreamClient:
    """A stream of the job; with ``avoid``, one that another worker than that one serves."""
    for _ in range(40):
        client = StreamClient(
            jobs.server.url,
            channels=[channel],
            params={"token": token},
            last_event_id=last_event_id,
        )
        assert client.response.status_code == 200, client.response.read()
        if avoid is None or client.response.headers["X-Worker"] != avoid:
            return client
        client.close()
    raise AssertionError(f"every stream went to worker {avoid}")


def test_a_dropped_job_stream_resumes_with_every_part_once(jobs: Jobs) -> None:
    channel, token, _, runner = jobs.start(parts=10, pause=0.15)
    # With two workers: first read where the job does not run, then resume where it does.
    first = open_job(jobs, channel, token, avoid=runner if jobs.redis else None)
    events = first.take(3)
    assert [event.data for event in events] == ["part 1", "part 2", "part 3"]
    serving = first.response.headers["X-Worker"]
    first.close()
    with open_job(
        jobs, channel, token, last_event_id=events[-1].id, avoid=serving if jobs.redis else None
    ) as resumed:
        rest = resumed.take(8)
        assert [event.data for event in rest[:-1]] == [f"part {number}" for number in range(4, 11)]
        assert (rest[-1].event, json.loads(rest[-1].data)) == ("done", {"items": 10})
        ids = [event.id for event in events + rest]
        assert len(set(ids)) == len(ids)
        # The server ends the stream after done.
        assert resumed.rest() == []


def test_an_ended_job_streams_from_its_first_event_then_ends(jobs: Jobs) -> None:
    channel, token, name, _ = jobs.start(parts=3)
    wait_until(lambda: f"torn down {name}" in jobs.happened(), 10, "the job to end")
    with open_job(jobs, channel, token) as client:
        events = client.rest()
    assert [(event.event, event.data) for event in events] == [
        ("message", "part 1"),
        ("message", "part 2"),
        ("message", "part 3"),
        ("done", '{"items":3}'),
    ]
    # From after the last event: nothing, and the stream ends.
    with open_job(jobs, channel, token, last_event_id=events[-1].id) as client:
        assert client.rest() == []


@pytest.mark.parametrize("jobs_env", [{"SSE_HISTORY": "5"}])
def test_a_busy_channel_does_not_evict_a_jobs_events(jobs: Jobs) -> None:
    channel, token, name, _ = jobs.start(parts=5)
    wait_until(lambda: f"torn down {name}" in jobs.happened(), 10, "the job to end")
    if jobs.redis is None:
        for number in range(20):  # SSE_HISTORY is 5
            jobs.server.say(f"busy {number}")
    else:
        app = Flask(__name__)
        app.config.update(SSE_BROKER_URL=jobs.redis.url, SSE_HISTORY=5)
        publisher = SSE(app)
        with app.app_context():
            for number in range(1000):  # the Redis stream keeps 100 or somewhat more
                publisher.publish(f"busy {number}")
        kept = jobs.redis.client().xrange("sse_flask:events", "-", "+")
        assert len(kept) < 1000 and not [
            entry for entry in kept if entry[1][b"c"] == channel.encode()
        ]
    with open_job(jobs, channel, token) as client:
        assert [event.data for event in client.rest()] == [f"part {n}" for n in range(1, 6)] + [
            '{"items":5}'
        ]


def test_a_failing_job_ends_with_a_safe_error(jobs: Jobs) -> None:
    channel, token, _, _ = jobs.start(parts=2, fail=True)
    with open_job(jobs, channel, token) as client:
        events = client.rest()
    assert [(event.event, event.data) for event in events] == [
        ("message", "part 1"),
        ("message", "part 2"),
        ("error", '{"error":"the job failed on the server; the details are in the server\'s log"}'),
    ]
    wait_until(
        lambda: "RuntimeError: a secret detail of the job" in jobs.server.log(),
        5,
        "the traceback in the log",
    )


def test_cancel_closes_the_jobs_generator_at_once_from_anywhere(jobs: Jobs) -> None:
    channel, token, name, _ = jobs.start(parts=1000, pause=60)
    with open_job(jobs, channel, token) as client:
        assert client.take(1)[0].data == "part 1"
        cancel(jobs, channel)
        events = client.rest()
    assert [(event.event, event.data) for event in events] == [("cancelled", '{"items":1}')]
    wait_until(
        lambda: jobs.happened() == [f"finally {name}", f"torn down {name}"],
        2,
        "the generator closed at once",
    )


def cancel(jobs: Jobs, channel: str) -> None:
    """Cancel the job: over HTTP with the in-process broker, else from this process."""
    if jobs.redis is None:
        assert jobs.server.post("/jobs/cancel", json={"channel": channel}).status_code == 204
    else:
        # From another process than any worker: this one, through Redis.
        app = Flask(__name__)
        app.config["SSE_BROKER_URL"] = jobs.redis.url
        with app.app_context():
            SSE(app).cancel_job(channel)


@pytest.mark.parametrize("jobs_env", [{"SSE_JOB_RETENTION": "1"}])
def test_a_jobs_events_go_after_its_retention(jobs: Jobs) -> None:
    channel, token, _name, _ = jobs.start(parts=1)
    with open_job(jobs, channel, token) as client:
        assert [event.event for event in client.rest()] == ["message", "done"]

    def gone() -> bool:
        response = jobs.server.get("/events", params={"channel": channel, "token": token})
        return response.status_code == 404 and "SSE_JOB_RETENTION" in response.json()["error"]

    wait_until(gone, 10, "the job to be forgotten")


def test_a_jobs_channel_needs_its_token_alone_and_no_publisher(
    serve: t.Callable[..., Server], tmp_path: Path
) -> None:
    server = serve(
        app=APP, env={"JOBS_LOG": str(tmp_path / "jobs.log"), "SSE_PUBLISH_TOKEN": TOKEN}
    )
    response = server.post("/jobs", json={"name": "x", "parts": 1})
    channel, token = response.json()["channel"], response.json()["token"]
    assert channel.startswith("job:") and len(channel) >= 4 + 24
    other = server.post("/jobs", json={"name": "y", "parts": 1}).json()
    answers = {
        "no token": server.get("/events", params={"channel": channel}),
        "another job's token": server.get(
            "/events", params={"channel": channel, "token": other["token"]}
        ),
        "beside another channel": server.get(
            "/events", params=[("channel", channel), ("channel", "news"), ("token", token)]
        ),
        "unknown": server.get(
            "/events",
            params={
                "channel": "job:nothing",
                "token": server.get("/token?channel=job:nothing").text,
            },
        ),
        "published to": server.post(
            "/say",
            json={"data": "forged", "channel": channel},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ),
    }
    assert {why: response.status_code for why, response in answers.items()} == {
        "no token": 403,
        "another job's token": 403,
        "beside another channel": 400,
        "unknown": 404,
        "published to": 400,
    }
    assert "token that start_job gave" in answers["no token"].json()["error"]
    assert "streamed on its own" in answers["beside another channel"].json()["error"]
    assert "only the job publishes" in answers["published to"].json()["error"]
    assert all(isinstance(response.json()["error"], str) for response in answers.values())
    assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200


def test_on_threads_a_job_runs_in_a_thread_and_cancels_at_its_next_step() -> None:
    """Without gevent the job runs in a thread, in an app context whose teardown runs at its
    end; a cancel closes its generator when the step running returns."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "tests-only secret"
    sse = SSE(app)
    happened: list[str] = []
    app.teardown_appcontext(lambda error: happened.extend(["torn down"] if "job" in g else []))

    def ticks() -> t.Iterator[int]:
        g.job = True
        try:
            for number in itertools.count(1):
                yield number
                time.sleep(0.05)
        finally:
            happened.append("finally")

    with app.app_context():
        job = sse.start_job(ticks)
    broker = app.extensions["sse"].broker
    subscription = broker.subscribe_job(job.channel, None, queue_size=1000)
    received = b""
    while b"data: 3\n" not in received:
        received += subscription.wait(5) or b"".join(subscription.take_replay())
    job.cancel()
    wait_until(lambda: subscription.closed is not None, 2, "the job to end")
    received += subscription.wait(0)
    assert b"event: cancelled\n" in received
    assert happened == ["finally", "torn down"]
