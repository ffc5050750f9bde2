"""Redis as production runs it: a primary and a replica behind three Sentinels, and over TLS,
all real processes on free ports. The primary is killed in the middle of a stream: the worker
follows the new primary, publishes resume, open streams go on, and events the new primary
never had are announced with ``missed`` to clients that resume, never lost silently.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from helpers.env import free_port, need
from helpers.proxy import Proxy
from helpers.redis import RedisServer
from helpers.retry import say_until_answered
from helpers.servers import Server
from helpers.sse import StreamClient
from helpers.wait import wait_until

from sse_flask.broker.redis_stream import STREAM_KEY

pytestmark = pytest.mark.redis

SERVICE = "primary"


class Sentinels:
    """A primary, a replica of it, and three Sentinels watching them (quorum 2), quick to
    fail over: the primary counts as down after 300 ms.

    The primary is reached through :attr:`proxy` (by the Sentinels, the replica and so the
    broker), so that the replica's link, the proxy's first connection, can be cut without
    closing: the primary then acknowledges writes the replica never gets.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.primary = self._redis("primary")
        self.proxy = Proxy(self.primary.port)
        self.replica = self._redis("replica", "--replicaof", "127.0.0.1", str(self.proxy.port))
        self.sentinel_ports = [free_port() for _ in range(3)]
        wait_until(self._replica_linked, 20, "the replica to sync")
        self.sentinels = [self._sentinel(port) for port in self.sentinel_ports]
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        self.url = f"redis+sentinel://{hosts}/{SERVICE}"
        wait_until(self._ready, 20, "the Sentinels to know the replica and each other")

    def primary_port(self) -> int:
        """The primary's port, as the first Sentinel says."""
        import redis

        sentinel = redis.Redis(port=self.sentinel_ports[0])
        address = t.cast("tuple[str, int]", sentinel.sentinel_get_master_addr_by_name(SERVICE))
        return int(address[1])

    def cut_replication(self) -> None:
        """The replica's link to the primary goes dead without closing."""
        assert self.proxy.blackhole(first=1) == 1

    def stop(self) -> None:
        self.proxy.close()
        for process in [*self.sentinels, self.primary.process, self.replica.process]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)

    def _redis(self, name: str, *args: str) -> RedisServer:
        directory = self.directory / name
        directory.mkdir()
        server = RedisServer(directory, args=args)
        server.start()
        return server

    def _sentinel(self, port: int) -> subprocess.Popen[bytes]:
        # Sentinel rewrites its configuration file: one each, in the test's directory.
        config = self.directory / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.proxy.port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} 300\n"
            f"sentinel failover-timeout {SERVICE} 3000\n"
        )
        return subprocess.Popen(
            ["redis-server", str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _replica_linked(self) -> bool:
        return bool(self.replica.client().info("replication")["master_link_status"] == "up")

    def _ready(self) -> bool:
        import redis

        try:
            for port in self.sentinel_ports:
                sentinel = redis.Redis(port=port, decode_responses=True)
                others = t.cast("list[dict[str, t.Any]]", sentinel.sentinel_sentinels(SERVICE))
                if not sentinel.sentinel_slaves(SERVICE) or len(others) < 2:
                    return False
        except redis.RedisError:
            return False
        return True


@pytest.fixture
def sentinels(tmp_path: Path) -> t.Iterator[Sentinels]:
    need("redis-server", shutil.which("redis-server"))
    group = Sentinels(tmp_path)
    yield group
    group.stop()


def test_failover_mid_stream_follows_the_new_primary_and_announces_what_it_lost(
    serve: t.Callable[..., Server], sentinels: Sentinels, stream: t.Callable[..., StreamClient]
) -> None:
    """Events acknowledged by a primary that dies before its replica has them: the open stream
    has them and goes on with what the new primary takes; a client resuming from any id
    written before the failover is told ``missed`` first, then gets what the new primary holds."""
    server = serve(broker=sentinels.url, env={"SSE_HEARTBEAT": "0.3"})
    client = stream(server.url)
    replicated = server.say("replicated")
    assert [e.data for e in client.take(1)] == ["replicated"]
    wait_until(lambda: sentinels.replica.client().xlen(STREAM_KEY) == 1, 10, "the replica")
    # The replica's link goes dead; the primary acknowledges three more, then dies.
    sentinels.cut_replication()
    lost = [server.say(f"lost {n}") for n in range(3)]
    assert [e.data for e in client.take(3)] == ["lost 0", "lost 1", "lost 2"]
    assert sentinels.primary.process is not None
    sentinels.primary.process.kill()
    wait_until(lambda: sentinels.primary_port() == sentinels.replica.port, 30, "the promotion")
    after = [say_until_answered(server, f"after {n}") for n in range(3)]
    events = client.take(3)
    assert [(e.data, e.id) for e in events] == [(f"after {n}", after[n]) for n in range(3)]
    for last_event_id in (replicated, lost[0], lost[-1]):
        with StreamClient(server.url, last_event_id=last_event_id) as resumed:
            [missed] = resumed.take(1)
            assert missed.event == "missed", f"silent loss resuming from {last_event_id}: {missed}"
            rest = resumed.take(4)
            assert [e.data for e in rest] == ["replicated", "after 0", "after 1", "after 2"]
    with StreamClient(server.url, last_event_id=after[-1]) as resumed:
        following = server.say("following")
        [event] = resumed.take(1)
        assert (event.event, event.id) == ("message", following)


def test_wait_replicas_returns_once_a_replica_has_the_event(
    serve: t.Callable[..., Server], sentinels: Sentinels
) -> None:
    """With SSE_REDIS_WAIT_REPLICAS=1, a publish answers once the replica has it; with the
    replica stopped it answers 503 after a second, saying the event may be lost, not that
    nothing was sent, and giving its id; ``sse-flask say``, which tries a publish again
    after a 503 that says nothing was sent, does not send that one twice."""
    server = serve(broker=sentinels.url, env={"SSE_REDIS_WAIT_REPLICAS": "1"})
    event_id = server.say("replicated")
    entries = sentinels.replica.client().xrange(STREAM_KEY)
    assert [entry_id.decode() for entry_id, _ in entries] == [event_id.partition("-")[2]]
    sentinels.cut_replication()
    response = server.post("/say", json={"data": "unconfirmed"})
    assert response.status_code == 503
    answer = response.json()
    assert "only 0 of 1 replicas" in answer["error"] and "nothing was sent" not in answer["error"]
    written = [entry_id.decode() for entry_id, _ in sentinels.primary.client().xrange(STREAM_KEY)]
    assert written[-1] == answer["id"].partition("-")[2]
    said = subprocess.run(
        [sys.executable, "-m", "sse_flask", "say", "once", "--url", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert said.returncode == 1 and "only 0 of 1 replicas" in said.stderr, said.stderr
    assert len(sentinels.primary.client().xrange(STREAM_KEY)) == len(written) + 1


def tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with openssl."""
    need("openssl", shutil.which("openssl"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_stream_and_publish_over_tls(
    serve: t.Callable[..., Server], stream: t.Callable[..., StreamClient], tmp_path: Path
) -> None:
    """A redis-server that speaks only TLS, with a certificate made here: a rediss:// URL that
    trusts it serves a stream, a publish and a resume."""
    need("redis-server", shutil.which("redis-server"))
    cert, key = tls_files(tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        server = serve(broker=url)
        client = stream(server.url)
        event_id = server.say("over tls")
        [event] = client.take(1)
        assert (event.data, event.id) == ("over tls", event_id)
        with StreamClient(server.url, last_event_id=event_id) as resumed:
            following = server.say("resumed over tls")
            assert [e.id for e in resumed.take(1)] == [following]
    finally:
        process.kill()
        process.wait(10)


def test_a_bad_sentinel_url_fails_at_start_up() -> None:
    """A redis+sentinel:// URL without a service name is refused when the app is set up."""
    from flask import Flask

    from sse_flask import SSE, ConfigError

    app = Flask("bad")
    app.config["SSE_BROKER_URL"] = "redis+sentinel://127.0.0.1:26379"
    must = r"SSE_BROKER_URL must be redis\+sentinel://.*/service_name"
    with pytest.raises(ConfigError, match=must):
        SSE(app)


CHURN = Path(__file__).resolve().parent.parent / "benchmarks" / "churn.py"


def test_churn_through_a_sentinel_failover_loses_nothing() -> None:
    """``benchmarks/churn.py --broker sentinel``: 100 clients dropping and resuming while
    events are published, the primary SIGKILLed and replaced by its replica mid-run, every
    publish waiting for a replica: nothing lost or out of order, every gap announced by
    ``missed``, and nothing received twice but in the replay that follows a ``missed`` (an
    event the dying primary wrote and delivered, but lost: its id is unknown to the new one)."""
    need("redis-server", shutil.which("redis-server"))
    command = [
        sys.executable,
        str(CHURN),
        "--clients",
        "100",
        "--seconds",
        "8",
        "--broker",
        "sentinel",
        "--soak-seconds",
        "0",
        "--drain",
        "15",
        "--json",
        "--timeout",
        "90",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=100)
    assert run.stdout, f"churn.py printed no results (exit {run.returncode}):\n{run.stderr[-5000:]}"
    result = json.loads(run.stdout)["results"]["sentinel"]
    details = run.stderr[-3000:] + "\n" + json.dumps(result, indent=1)[:6000]
    for key in ("lost", "out_of_order", "wrong_channel", "never_connected"):
        assert result[key] == 0, f"{key}: {result[key]}\n{details}"
    assert result["duplicated"] == result["duplicated_after_missed"], details
    assert any("primary SIGKILLed" in fault for fault in result["faults"]), details
    # A failover under load may hold publishes back for seconds: what matters is that the new
    # primary took some, not how many the run managed in all.
    assert result["drops"] >= 30 and result["published_after_faults"] >= 10, details
    assert result["received"] + result["announced_gaps"] == result["expected"], details
    assert not result["server_tracebacks"], details
