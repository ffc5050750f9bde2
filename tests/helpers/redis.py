"""A ``redis-server`` on a free port, started and stopped by the tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import typing as t
from pathlib import Path

from helpers.env import free_port
from helpers.wait import wait_until


class RedisServer:
    """A ``redis-server`` on a free port that tests may stop and restart: keeping nothing on
    disk, or with ``persistent`` every write in its append-only file before it answers.
    ``args`` are more of redis-server's options (``--replicaof HOST PORT``)."""

    def __init__(
        self, directory: Path, *, persistent: bool = False, args: t.Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.directory = directory
        self.persistent = persistent
        self.args = list(args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._pong, 10, f"redis-server on port {self.port} to answer PING")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self) -> t.Any:
        import redis

        return redis.Redis.from_url(self.url)

    def _pong(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
        ):
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
        return False
