"""The /events fuzz of test_fuzz_api.py against the Redis broker, whose ids and history are
Redis's (helpers/fuzz.py): 200 publishes of fuzzed JSON bodies, then 600 cases of ``GET
/events`` with any channels and resume ids; then the same checks afterwards.
"""

from __future__ import annotations

import shutil
import typing as t

import pytest
from helpers.env import need
from helpers.fuzz import AUTH, Fuzz, build, check_afterwards, events_case, fuzz_settings, fuzzing
from helpers.fuzz_strategies import events_arguments, json_bodies
from helpers.fuzz_verdicts import json_verdict
from helpers.redis import RedisServer
from hypothesis import given

# A failing example with a 10 MB body would otherwise fail again, on the size of its repr.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


@pytest.fixture(scope="module")
def redis_fuzz(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> t.Iterator[Fuzz]:
    need("redis-server", shutil.which("redis-server"))
    directory = tmp_path_factory.mktemp("fuzz-redis")
    redis = RedisServer(directory)
    redis.start()
    try:
        with fuzzing(
            ["--broker", redis.url], directory / "gunicorn.log", request, "redis "
        ) as state:
            yield state
    finally:
        redis.stop()


@pytest.mark.redis
def test_fuzz_events_on_redis(redis_fuzz: Fuzz) -> None:
    """The /events fuzz, and some publishes, against the Redis broker; then the same checks."""

    @fuzz_settings(600)
    @given(events_arguments)
    def case(arguments: tuple[t.Any, ...]) -> None:
        events_case(redis_fuzz, "events-redis", *arguments)

    @fuzz_settings(200)
    @given(json_bodies())
    def publish(body: bytes) -> None:
        request = build(
            "POST", "/say", [("Authorization", AUTH), ("Content-Type", "application/json")], body
        )
        redis_fuzz.check(
            "json-redis", redis_fuzz.wire.exchange(request, "POST"), json_verdict(body), body=body
        )

    publish()
    case()
    check_afterwards(redis_fuzz)
