"""One measurement: a fresh server (and Redis), the load generator against it, figures.

The server side (the server's whole process session, plus its redis-server when it has
one) runs pinned to one core, the load generator to the other. CPU is read from
/proc/PID/stat around the measurement window, memory (VmRSS) from /proc/PID/status:
with no stream open, once every stream is open and idle, and after the events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request
from pathlib import Path

from . import procs
from .servers import PEERS, Server

__all__ = ["Plan", "py_spy", "run_scenario", "wait_ready"]


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to measure, and the cores to use."""

    server_cpu: int
    load_cpu: int
    clients: int = 100
    publishers: int = 4
    duration: float = 10.0
    streams: tuple[int, ...] = (1000, 5000, 10000)
    events: int = 20
    rate: float = 2.0
    settle: float = 1.0
    #: the reconnect storm: streams, and the events published while they are away
    storm: int = 10000
    missed: int = 50
    #: the latency-throughput curve: offered rates as fractions of the maximum, seconds at
    #: each, and the publishers that issue them
    curve: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 1.0)
    curve_duration: float = 5.0
    pool: int = 64
    #: wait up to this many seconds for both cores to be quiet (under 25% busy) first
    quiet_wait: float = 0.0


def run_scenario(
    server: Server,
    mode: str,
    streams: int,
    plan: Plan,
    binaries: dict[str, Path],
    workdir: Path,
    *,
    profile: Path | None = None,
    offered: float | None = None,
) -> dict[str, t.Any]:
    """Start ``server`` afresh, run the load generator in ``mode`` with ``streams`` streams
    and return the figures; never raises for a server that misbehaves (the reason goes in
    ``"error"``), and stops every process it started.

    :param offered: the ``rate`` mode's offered deliveries per second (events per second
        times ``streams``).

    :param profile: where to write a py-spy profile (speedscope) of the server's newest
        process (the gunicorn worker) over the measurement window; py-spy runs on the load
        core.
    """
    label = f"{server.name}-{mode}-{streams}"
    result: dict[str, t.Any] = {"server": server.name, "mode": mode, "streams": streams}
    if offered is not None:
        result["offered"] = offered
        label += f"-{offered:.0f}"
    deadline = time.monotonic() + plan.quiet_wait
    busy = _background_busy(plan)
    while max(busy) > 25 and time.monotonic() < deadline:
        busy = _background_busy(plan)
    result["background_busy_percent"] = busy
    started: list[procs.Proc] = []
    try:
        redis_url = None
        redis = None
        if server.redis:
            redis_server = procs.Redis(workdir / f"{label}.redis.log", cpu=plan.server_cpu)
            redis, redis_url = redis_server.start(), redis_server.url
            started.append(redis)
        port = procs.free_port()
        srv = procs.start(
            server.name,
            server.argv(port, redis_url, binaries),
            cpu=plan.server_cpu,
            env=server.environ(redis_url),
            # Not the caller's folder: gunicorn would read a gunicorn.conf.py found there.
            cwd=PEERS,
            log=workdir / f"{label}.server.log",
        )
        started.append(srv)
        base = f"http://127.0.0.1:{port}"
        wait_ready(srv, base + "/stats", timeout=30)

        def server_pids() -> list[int]:
            pids = procs.session_pids(srv.pid)
            return pids + (procs.session_pids(redis.pid) if redis is not None else [])

        result["listen_backlog"] = procs.listen_backlog(port)
        time.sleep(0.3)
        result["rss_empty"] = procs.rss_bytes(server_pids())
        result["server_processes"] = len(server_pids())

        if mode == "throughput":
            args = ["-mode", "throughput", "-streams", str(streams), "-publishers", str(plan.publishers),
                    "-duration", str(plan.duration), "-drain", "5"]  # fmt: skip
            window_timeout = plan.duration + 30
            window = plan.duration
        elif mode == "rate":
            assert offered is not None
            args = ["-mode", "rate", "-streams", str(streams), "-rate", str(offered / streams),
                    "-duration", str(plan.curve_duration), "-pool", str(plan.pool), "-drain", "5"]  # fmt: skip
            window_timeout = plan.curve_duration + 30
            window = plan.curve_duration
        elif mode == "storm":
            # Priming (10 s at most), the drop (10 s), the server letting go (15 s), the storm.
            args = ["-mode", "storm", "-streams", str(streams), "-missed", str(plan.missed),
                    "-drain", "10", "-storm-timeout", "60"] + (["-replay"] if server.replays else [])  # fmt: skip
            window_timeout = 10 + 10 + 15 + 60 + 30
            window = 30
        else:
            args = ["-mode", "fanout", "-streams", str(streams), "-events", str(plan.events),
                    "-rate", str(plan.rate), "-drain", "10"]  # fmt: skip
            window_timeout = plan.events / plan.rate + 60
            window = plan.events / plan.rate + 2
        connect_timeout = 30 + streams / 100
        deadline = connect_timeout + window_timeout + 60
        load = procs.start(
            "loadgen",
            [
                str(binaries["loadgen"]),
                "-url",
                base,
                "-procs",
                "1",
                "-stall",
                "8",
                "-deadline",
                str(deadline),
                *args,
            ],
            cpu=plan.load_cpu,
            env={"PATH": "/usr/bin:/bin", "GOMAXPROCS": "1"},
            log=workdir / f"{label}.loadgen.log",
            interactive=True,
        )
        started.append(load)
        connected = load.expect("connected ", timeout=connect_timeout).split()
        result["subscribed"], result["opened"] = int(connected[1]), int(connected[2])
        result["connect_seconds"] = float(connected[3])
        time.sleep(plan.settle)
        result["rss_idle"] = procs.rss_bytes(server_pids())

        cpu_server_0, cpu_load_0 = procs.cpu_seconds(server_pids()), procs.cpu_seconds([load.pid])
        redis_cpu_0 = procs.cpu_seconds(procs.session_pids(redis.pid)) if redis is not None else 0.0
        spy = (
            _start_py_spy(max(procs.session_pids(srv.pid)), profile, window, plan, workdir)
            if profile
            else None
        )
        if spy is not None:
            started.append(spy)
        cores_0 = procs.core_busy_seconds(plan.server_cpu), procs.core_busy_seconds(plan.load_cpu)
        tcp_0 = procs.tcp_counters()
        wall_0 = time.monotonic()
        load.send("go")
        load.expect("window-end", timeout=window_timeout)
        wall = time.monotonic() - wall_0
        tcp = procs.tcp_counters()
        result["tcp_counters"] = {name: tcp[name] - tcp_0[name] for name in tcp}
        cpu_server = procs.cpu_seconds(server_pids()) - cpu_server_0
        cpu_load = procs.cpu_seconds([load.pid]) - cpu_load_0
        cores = procs.core_busy_seconds(plan.server_cpu), procs.core_busy_seconds(plan.load_cpu)
        result["server_core_busy_percent"] = 100 * (cores[0] - cores_0[0]) / wall
        result["load_core_busy_percent"] = 100 * (cores[1] - cores_0[1]) / wall
        redis_cpu = (
            procs.cpu_seconds(procs.session_pids(redis.pid)) - redis_cpu_0
            if redis is not None
            else 0.0
        )
        result["rss_after"] = procs.rss_bytes(server_pids())
        result["cpu_window_seconds"] = wall
        result["server_cpu_percent"] = 100 * cpu_server / wall
        result["redis_cpu_percent"] = 100 * redis_cpu / wall
        result["load_cpu_percent"] = 100 * cpu_load / wall
        line = load.expect("result ", timeout=60)
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.popen.wait(timeout=30)
            result["profile"] = str(profile)
        result["load"] = json.loads(line[len("result ") :])
        subscribed = max(result["subscribed"], 1)
        result["memory_per_stream"] = (result["rss_idle"] - result["rss_empty"]) / subscribed
        result["memory_per_stream_after"] = (result["rss_after"] - result["rss_empty"]) / subscribed
        # The core was saturated yet the server got well under all of it: other processes
        # competed for it, and the figures understate the server.
        result["contended"] = result["server_core_busy_percent"] > 95 and (
            result["server_cpu_percent"] + result["redis_cpu_percent"] < 75
        )
        if not srv.alive():
            result["error"] = f"the server exited during the run: {srv.log_tail(5)}"
    except (TimeoutError, OSError, RuntimeError, ValueError) as e:
        result["error"] = str(e)
        for proc in started:
            if proc.name not in ("loadgen", "redis") and proc.log_tail():
                result["error"] += f"\n--- {proc.name} log ---\n{proc.log_tail()}"
    finally:
        for proc in reversed(started):
            proc.stop()
    return result


def _background_busy(plan: Plan, seconds: float = 0.5) -> list[float]:
    """How busy each core is with nothing of ours running, in %, over ``seconds``."""
    cores = (plan.server_cpu, plan.load_cpu)
    before = [procs.core_busy_seconds(cpu) for cpu in cores]
    time.sleep(seconds)
    return [
        round(100 * (procs.core_busy_seconds(cpu) - b) / seconds) for cpu, b in zip(cores, before)
    ]


def py_spy() -> str | None:
    """py-spy's path: beside this Python (a virtualenv's, whose bin may not be on PATH),
    or on PATH."""
    return shutil.which(
        "py-spy",
        path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )


def _start_py_spy(
    pid: int, output: Path, seconds: float, plan: Plan, workdir: Path
) -> procs.Proc | None:
    spy = py_spy()
    if spy is None:
        return None
    return procs.start(
        "py-spy",
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--duration",
            str(int(seconds) + 1),
            "--nonblocking",
            "--format",
            "speedscope",
            "--output",
            str(output),
        ],
        cpu=plan.load_cpu,
        log=workdir / "py-spy.log",
    )


def wait_ready(srv: procs.Proc, url: str, timeout: float) -> None:
    def answers() -> bool:
        if not srv.alive():
            raise RuntimeError(f"{srv.name} exited at start (status {srv.popen.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    try:
        procs.wait_for(answers, timeout, f"{srv.name} to answer {url}")
    except RuntimeError as e:
        raise RuntimeError(f"{e}:\n{srv.log_tail()}") from None
