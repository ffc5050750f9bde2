"""Live servers, each a process in its own session on an ephemeral port of 127.0.0.1, its
output in a log file: ``sse-flask serve`` (gunicorn with sse-flask's gevent worker), plain
gunicorn with any worker class, waitress, and Flask's dev server."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
import requests

from helpers.env import TESTS
from helpers.wait import wait_until

#: How gunicorn, waitress and Flask's dev server say where they listen.
_LISTENING = re.compile(r"(?:Listening at:|Serving on|Running on) http://127\.0\.0\.1:(\d+)")
#: No keep-alive: an idle kept-alive connection would hold a stopping worker until it times out.
_CLOSE = {"Connection": "close"}
_Server = t.TypeVar("_Server", bound="Server")


def command(server: str, app: str, *options: str) -> list[str]:
    """The command line serving ``app`` (a ``MODULE:FACTORY`` import string) with ``server``:
    ``waitress`` (4 threads), ``flask`` (the dev server), or else gunicorn with one worker of
    that class (``sync``, ``gthread`` with 4 threads, ``gevent``). ``options`` go before
    gunicorn's app argument, after the others' arguments."""
    if server == "waitress":
        waitress = [sys.executable, "-m", "waitress", "--listen=127.0.0.1:0", "--threads=4"]
        return [*waitress, "--call", app, *options]
    if server == "flask":
        return [sys.executable, "-m", "flask", "--app", app, "run", "--port", "0", *options]
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "--no-control-socket"]
    gunicorn += ["--workers", "1", "-k", server]
    if server == "gthread":
        gunicorn += ["--threads", "4"]
    return [*gunicorn, *options, f"{app}()"]


class Server:
    """A server started from ``command``, ready once it listens, once ``workers`` of
    sse-flask's workers have booted, and once ``healthz`` (a path under :attr:`prefix`)
    answers; ``measured=False`` leaves it out of coverage's measurement. :meth:`serve` starts
    ``sse-flask serve``, :func:`command` makes the other servers' command lines."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int = 0,
        prefix: str = "",
        healthz: str | None = "/healthz",
        cwd: Path = TESTS,
        measured: bool = True,
    ) -> None:
        self.log_path = log_path
        self.env = env
        self.workers = workers
        #: Where the blueprint is mounted (the app's SSE_URL_PREFIX); get, post, say and
        #: stats are relative to it.
        self.prefix = prefix
        #: Sent as a bearer token by :meth:`say` when the server requires one.
        self.publish_token = env.get("SSE_PUBLISH_TOKEN")
        base_env = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
        if not measured:
            base_env = {k: v for k, v in base_env.items() if not k.startswith("COVERAGE_PROCESS")}
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**base_env, "PYTHONUNBUFFERED": "1", **env},
                cwd=cwd,
                start_new_session=True,
            )
        try:
            self.port = int(wait_until(self._listening, 30, "the server to listen").group(1))
            self.url = f"http://127.0.0.1:{self.port}"
            if workers:
                wait_until(
                    lambda: len(self.worker_pids()) >= workers, 30, f"{workers} workers to boot"
                )
            if healthz is not None:
                wait_until(lambda: self._healthy(healthz), 30, f"{healthz} to answer")
        except AssertionError as e:
            self.stop()
            pytest.fail(f"the server did not start ({e}); its log:\n{self.log()}")

    @classmethod
    def serve(
        cls: type[_Server],
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        workers: int = 1,
        prefix: str = "",
        *,
        command: list[str] | None = None,
        cwd: Path = TESTS,
        healthz: str = "/healthz",
    ) -> _Server:
        """``sse-flask serve --bind 127.0.0.1:0 --workers N`` with ``args``; ``command``
        replaces that (another console script, or gunicorn with sse-flask's config)."""
        serve = [sys.executable, "-m", "sse_flask", "serve", "--bind", "127.0.0.1:0"]
        serve += ["--workers", str(workers)]
        return cls(
            [*(command or serve), *args],
            env,
            log_path,
            workers=workers,
            prefix=prefix,
            healthz=healthz,
            cwd=cwd,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """Workers serving (app loaded, signal handlers set) and not yet exited, oldest first.

        A worker that gunicorn has forked but not finished booting would lose a SIGTERM,
        so only workers that have logged "Worker ready" count.
        """
        log = self.log()
        exited = {int(pid) for pid in re.findall(r"Worker exiting \(pid: (\d+)\)", log)}
        ready = [int(pid) for pid in re.findall(r"Worker ready \(pid: (\d+)\)", log)]
        return [pid for pid in ready if pid not in exited and _alive(pid)]

    def get(self, path: str, **kwargs: t.Any) -> requests.Response:
        headers = {**_CLOSE, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return requests.get(self.url + self.prefix + path, headers=headers, **kwargs)

    def post(self, path: str, **kwargs: t.Any) -> requests.Response:
        headers = {**_CLOSE, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return requests.post(self.url + self.prefix + path, headers=headers, **kwargs)

    def say(self, data: t.Any = None, **fields: t.Any) -> str:
        """Publish over POST /say, with the server's publish token if it has one; return the
        event id."""
        headers = {"Authorization": f"Bearer {self.publish_token}"} if self.publish_token else {}
        response = self.post("/say", json={"data": data, **fields}, headers=headers)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def stats(self) -> dict[str, t.Any]:
        return dict(self.get("/stats").json())

    def reload(self) -> None:
        """Graceful reload (SIGHUP): new workers boot, old ones are sent SIGTERM."""
        old = set(self.worker_pids())
        self.process.send_signal(signal.SIGHUP)
        wait_until(
            lambda: not old & set(self.worker_pids()) and len(self.worker_pids()) >= self.workers,
            30,
            "workers to reload",
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def _listening(self) -> re.Match[str] | None:
        if self.process.poll() is not None:
            raise AssertionError(f"it exited with {self.process.returncode}")
        return _LISTENING.search(self.log())

    def _healthy(self, path: str) -> bool:
        with contextlib.suppress(requests.RequestException):
            url = self.url + self.prefix + path
            return requests.get(url, timeout=2, headers=_CLOSE).status_code == 200
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" not in status.read_text()
