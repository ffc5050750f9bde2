"""The several-worker scale row: ``sse-flask serve --workers W --broker redis://...`` holding
W times N idle streams on one host, one publisher's events reaching all of them.

No process here may open more than 20,000 files, and one source address has about 28,000
ephemeral ports towards one server port, so the streams are held by several load generator
processes, each under both limits and dialling from its own address of 127.0.0.0/8
(127.0.0.2, 127.0.0.3, ...). They are started one after another; each counts the streams
the whole server holds from ``/metrics`` (``sse_streams_open``, summed over the workers;
``/stats`` answers for the one worker that took the request), less those the processes
before it opened. A further process holding no stream publishes.

Latency crosses processes, so every load generator runs with ``-clock wall``: the publisher
writes CLOCK_REALTIME (Unix nanoseconds) into each event just before the request, and each
listener subtracts it from CLOCK_REALTIME read when the event is parsed; processes on one
host read the same clock. The listeners write each delivery's latency to a file, merged here.

Workers, redis-server and the load generators share both cores: W workers cannot be pinned
to one. How many streams each worker took is read from /proc (its socket descriptors, less
those it had before the streams opened), and memory per stream is the growth of the
workers' RSS over the streams held.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import typing as t
from pathlib import Path

from . import procs
from .scenario import wait_ready
from .servers import PEERS, SERVERS, sse_flask_argv

__all__ = ["ScalePlan", "run_scale"]


@dataclasses.dataclass(frozen=True)
class ScalePlan:
    """What the scale row measures."""

    #: every core the run may use: the row runs on all of them
    cpus: frozenset[int]
    workers: int = 4
    #: streams per worker
    streams: int = 15000
    #: streams per load generator process: under the 20,000 open files of one process, and
    #: under one source address's ephemeral ports
    per_process: int = 15000
    #: few and far apart: one event to 60,000 streams costs this machine about 2.5 CPU seconds
    #: (server and load generators), so events 1 s apart would queue behind each other and
    #: the latency would measure the backlog, not one publish's fan-out
    events: int = 3
    rate: float = 0.2
    settle: float = 2.0


def run_scale(plan: ScalePlan, binaries: dict[str, Path], workdir: Path) -> dict[str, t.Any]:
    """Start redis-server and ``plan.workers`` sse-flask workers, hold ``plan.workers *
    plan.streams`` streams, publish ``plan.events`` events and return the figures; never
    raises for a server that misbehaves (the reason goes in ``"error"``), and stops every
    process it started."""
    total = plan.workers * plan.streams
    server = SERVERS["sse_flask-redis"]
    label = f"scale-{plan.workers}x{plan.streams}"
    result: dict[str, t.Any] = {
        "server": server.name,
        "mode": "scale",
        "streams": total,
        "workers": plan.workers,
        "events": plan.events,
        "rate": plan.rate,
    }
    started: list[procs.Proc] = []
    own_cpus = os.sched_getaffinity(0)
    # The processes started inherit this affinity: every core, for the whole row.
    os.sched_setaffinity(0, plan.cpus)
    try:
        redis_server = procs.Redis(workdir / f"{label}.redis.log")
        redis = redis_server.start()
        started.append(redis)
        port = procs.free_port()
        srv = procs.start(
            server.name,
            sse_flask_argv(port, redis_server.url, plan.workers),
            cpu=None,
            env=server.environ(redis_server.url),
            cwd=PEERS,
            log=workdir / f"{label}.server.log",
        )
        started.append(srv)
        base = f"http://127.0.0.1:{port}"
        wait_ready(srv, base + "/stats", timeout=60)
        procs.wait_for(
            lambda: len(_workers(srv)) >= plan.workers, 60, f"{plan.workers} workers to start"
        )
        time.sleep(0.5)
        workers = _workers(srv)
        rss_empty = {pid: procs.rss_bytes([pid]) for pid in workers}
        sockets_empty = {pid: _sockets(pid) for pid in workers}
        result["redis_rss_empty"] = procs.rss_bytes([redis.pid])

        loadgen = [str(binaries["loadgen"]), "-url", base, "-procs", "1", "-stall", "15",
                   "-clock", "wall", "-mode", "fanout", "-events", str(plan.events),
                   "-rate", str(plan.rate), "-drain", "20", "-deadline", str(300 + total / 100)]  # fmt: skip
        listeners: list[tuple[procs.Proc, Path]] = []
        held = 0
        connect_0 = time.monotonic()
        for k in range(math.ceil(total / plan.per_process)):
            streams = min(plan.per_process, total - k * plan.per_process)
            latencies = workdir / f"{label}.latencies-{k}"
            argv = [*loadgen, "-streams", str(streams), "-listen-only", "-source", f"127.0.0.{k + 2}",
                    "-stats-path", "/metrics", "-count-metric", "sse_streams_open",
                    "-count-base", str(held), "-latencies", str(latencies)]  # fmt: skip
            listener = procs.start(
                f"loadgen-{k}",
                argv,
                cpu=None,
                env={"PATH": "/usr/bin:/bin", "GOMAXPROCS": "1"},
                log=workdir / f"{label}.loadgen-{k}.log",
                interactive=True,
            )
            started.append(listener)
            listeners.append((listener, latencies))
            connected = listener.expect("connected ", timeout=60 + streams / 50).split()
            held += int(connected[1])
        result["connect_seconds"] = time.monotonic() - connect_0
        result["subscribed"] = held
        result["load_processes"] = len(listeners)
        publisher = procs.start(
            "publisher",
            [*loadgen, "-streams", "0"],
            cpu=None,
            env={"PATH": "/usr/bin:/bin", "GOMAXPROCS": "1"},
            log=workdir / f"{label}.publisher.log",
            interactive=True,
        )
        started.append(publisher)
        publisher.expect("connected ", timeout=30)
        time.sleep(plan.settle)
        result["per_worker"] = sorted(
            (_sockets(pid) - sockets_empty[pid] for pid in workers), reverse=True
        )
        rss_idle = {pid: procs.rss_bytes([pid]) for pid in workers}
        result["rss_empty"] = sum(rss_empty.values())
        result["rss_idle"] = sum(rss_idle.values())
        result["redis_rss_idle"] = procs.rss_bytes([redis.pid])
        result["memory_per_stream"] = (result["rss_idle"] - result["rss_empty"]) / max(held, 1)
        load_pids = [p.pid for p, _ in listeners] + [publisher.pid]
        result["load_rss_idle"] = procs.rss_bytes(load_pids)

        server_pids = procs.session_pids(srv.pid)
        cpu_0 = [procs.cpu_seconds(server_pids), procs.cpu_seconds([redis.pid])]
        load_0 = procs.cpu_seconds(load_pids)
        wall_0 = time.monotonic()
        for listener, _ in listeners:
            listener.send("go")
        publisher.send("go")
        window_timeout = plan.events / plan.rate + 60
        for proc in [publisher] + [p for p, _ in listeners]:
            proc.expect("window-end", timeout=window_timeout)
        wall = time.monotonic() - wall_0
        result["cpu_window_seconds"] = wall
        result["server_cpu_percent"] = 100 * (procs.cpu_seconds(server_pids) - cpu_0[0]) / wall
        result["redis_cpu_percent"] = 100 * (procs.cpu_seconds([redis.pid]) - cpu_0[1]) / wall
        result["load_cpu_percent"] = 100 * (procs.cpu_seconds(load_pids) - load_0) / wall
        result["rss_after"] = sum(procs.rss_bytes([pid]) for pid in workers)
        published = json.loads(publisher.expect("result ", timeout=60)[len("result ") :])
        listened = [
            json.loads(p.expect("result ", timeout=60)[len("result ") :]) for p, _ in listeners
        ]
        result["load"] = _merge(published, listened, [path for _, path in listeners], held)
        if not srv.alive():
            result["error"] = f"the server exited during the run: {srv.log_tail(5)}"
    except (TimeoutError, OSError, RuntimeError, ValueError) as e:
        result["error"] = str(e)
        for proc in started:
            if proc.name == server.name and proc.log_tail():
                result["error"] += f"\n--- {proc.name} log ---\n{proc.log_tail()}"
    finally:
        for proc in reversed(started):
            proc.stop()
        os.sched_setaffinity(0, own_cpus)
    return result


def _workers(srv: procs.Proc) -> list[int]:
    """The gunicorn workers: the server's session less its master."""
    return sorted(pid for pid in procs.session_pids(srv.pid) if pid != srv.pid)


def _sockets(pid: int) -> int:
    """How many of ``pid``'s file descriptors are sockets."""
    count = 0
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):  # closed since the listing
            count += os.readlink(f"{fds}/{fd}").startswith("socket:")
    return count


def _merge(
    published: dict[str, t.Any], listened: list[dict[str, t.Any]], files: list[Path], held: int
) -> dict[str, t.Any]:
    """One figure set from the publisher's result and the listeners': expected is what the
    publisher got answered times every stream held, latency over every listener's deliveries."""
    problems = [r["latencies_error"] for r in listened if r.get("latencies_error")]
    if problems:
        raise RuntimeError(f"a load generator could not write its latencies: {problems[0]}")
    latencies = array.array("q")
    for path in files:
        latencies.frombytes(path.read_bytes())
    if sys.byteorder != "little":
        latencies.byteswap()
    received = sum(r["received"] for r in listened)
    expected = published["published"] * held
    counts = ("duplicates", "out_of_order", "unparsed", "other_events", "disconnects")
    errors: dict[str, int] = {}
    for r in listened:
        for problem, n in (r.get("stream_errors") or {}).items():
            errors[problem] = errors.get(problem, 0) + n
    return {
        "mode": "fanout",
        "published": published["published"],
        "publish_failed": published["publish_failed"],
        "publish_errors": published["publish_errors"],
        "publish_rtt_ms": published["publish_rtt_ms"],
        "publishes_late": published["publishes_late"],
        "expected": expected,
        "received": received,
        "lost": expected - received,
        **{key: sum(r[key] for r in listened) for key in counts},
        "stream_errors": errors,
        "connect_stalled": "; ".join(
            r["connect_stalled"] for r in listened if r["connect_stalled"]
        ),
        "latency_ms": _summary(sorted(latencies)),
    }


def _summary(ns: list[int]) -> dict[str, float] | None:
    """Milliseconds, percentiles by nearest rank (as the load generator's ``summarize``)."""
    if not ns:
        return None

    def rank(q: float) -> float:
        return ns[max(math.ceil(q * len(ns)) - 1, 0)] / 1e6

    return {
        "count": len(ns),
        "mean": sum(ns) / len(ns) / 1e6,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ns[-1] / 1e6,
    }
