"""One broker's run: the crowd and the publisher against a server, through the faults of
that broker (a graceful reload; a SIGKILLed worker and a Redis restart)."""

from __future__ import annotations

import argparse
import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import random
import time
import typing as t
from pathlib import Path

from harness import procs

from .crowd import CrowdHandle, client_process, client_specs, stop_process
from .launch import Sampler, Timeout, log, start_server, tracebacks
from .ledger import COUNTERS
from .publisher import Publisher


def run_broker(
    kind: str, options: argparse.Namespace, workdir: Path, deadline: float
) -> dict[str, t.Any]:
    started = time.monotonic()
    rng = random.Random(options.seed)
    faults: list[str] = []
    with contextlib.ExitStack() as cleanup:
        server, redis = start_server(kind, options, workdir, cleanup, kind)
        workers = server.workers
        log(f"{kind}: {workers} worker(s) on port {server.port}; {options.clients} clients")

        specs = client_specs(options.clients, rng)
        processes = options.processes or max(
            1, min(os.cpu_count() or 1, -(-options.clients // 500))
        )
        context = multiprocessing.get_context("fork")
        crowds = []
        size = -(-len(specs) // processes)
        for number in range(processes):
            ours, theirs = context.Pipe()
            share = specs[number * size : (number + 1) * size]  # contiguous: found by index
            process = context.Process(
                target=client_process,
                args=(
                    theirs,
                    server.port,
                    share,
                    options.drop_every,
                    options.away,
                    options.seed + number,
                ),
                daemon=True,
            )
            process.start()
            cleanup.callback(stop_process, process)
            crowds.append(CrowdHandle(process, ours))

        sampler = Sampler(server)
        sampler.start()
        cleanup.callback(sampler.stop)

        def poll(until: t.Callable[[], bool], timeout: float, what: str) -> None:
            end = min(time.monotonic() + timeout, deadline)
            while not until():
                if time.monotonic() > end:
                    if time.monotonic() > deadline:
                        raise Timeout(f"--timeout ran out waiting for {what}")
                    raise RuntimeError(f"timed out waiting for {what}")
                for crowd in crowds:
                    crowd.receive(0.02)

        def until(moment: float, what: str) -> None:
            """Keep reading the clients' reports until ``moment``."""
            poll(lambda: time.monotonic() >= moment, max(0.0, moment - time.monotonic()) + 5, what)

        poll(
            lambda: sum(c.streaming for c in crowds) >= options.clients,
            60,
            f"{options.clients} streams to open",
        )
        log(
            f"{kind}: all {options.clients} streams open; publishing {options.rate} events/s for {options.seconds} s"
        )

        publisher = Publisher(server.port, options.rate)
        publisher.start()
        cleanup.callback(publisher.stop)
        run_started = time.monotonic()
        schedule = {
            "memory": [(0.4, "reload")],
            "redis": [(0.3, "kill"), (0.6, "redis-stop")],
            "sentinel": [(0.4, "failover")],
        }[kind]
        for fraction, fault in schedule:
            until(run_started + fraction * options.seconds, "the next fault")
            if fault == "reload":
                server.reload()
                faults.append(f"graceful reload (SIGHUP) at {time.monotonic() - run_started:.1f} s")
            elif fault == "kill":
                victim = server.kill_worker()
                faults.append(
                    f"worker {victim} SIGKILLed at {time.monotonic() - run_started:.1f} s"
                )
            elif fault == "failover":
                assert isinstance(redis, procs.Sentinels)
                at = time.monotonic() - run_started
                redis.fail_over()
                faults.append(
                    f"primary SIGKILLed at {at:.1f} s; the Sentinels promoted the replica, and the"
                    " old primary, started again empty, replicated it"
                    f" {time.monotonic() - run_started - at:.1f} s later"
                )
            elif fault == "redis-stop":
                assert isinstance(redis, procs.Redis)
                at = time.monotonic() - run_started
                redis.kill()
                # A worker that starts while Redis is away (a crash, a max-requests restart)
                # must still deliver once Redis is back.
                victim = server.kill_worker()
                until(run_started + at + options.outage, "the end of the Redis outage")
                redis.start()
                faults.append(
                    f"redis-server killed at {at:.1f} s, started again (empty) {options.outage:g} s later; "
                    f"meanwhile worker {victim} SIGKILLed, its replacement started without Redis"
                )
            log(f"{kind}: {faults[-1]}")
        faults_over = time.monotonic()
        until(run_started + options.seconds, "the end of the run")

        publisher.run_over.set()
        poll(publisher.window_closed.is_set, 30, "the last publish of the run to be accepted")
        last_of_run = t.cast(int, publisher.last_of_run)
        run_seconds = time.monotonic() - run_started
        for crowd in crowds:
            crowd.control.send(("drain", last_of_run))
        log(f"{kind}: run over after {run_seconds:.1f} s ({last_of_run + 1} events); draining")
        drain_started = time.monotonic()
        try:
            poll(
                lambda: (
                    all(c.caught_up_reported for c in crowds)
                    and sum(c.caught_up for c in crowds) >= options.clients
                ),
                options.drain,
                "every client to catch up",
            )
        except RuntimeError as e:
            log(f"{kind}: {e}; counting what arrived")
        drain_seconds = time.monotonic() - drain_started
        publisher.stop()
        peak = sampler.stop()

        sent_at = {
            sequence: sent
            for sequence, sent in publisher.sent_at.items()
            if sequence <= last_of_run
        }
        attempts = dict(publisher.attempts)
        for crowd in crowds:
            crowd.control.send(("finish", sent_at, attempts, last_of_run))
        totals: collections.Counter[str] = collections.Counter()
        examples: list[str] = []
        republished: set[int] = set()
        for crowd in crowds:
            result = crowd.result(min(60, max(1, deadline - time.monotonic())))
            totals.update(result["totals"])
            examples += result["examples"]
            republished.update(result["republished"])
        examples += [
            f"event {sequence} arrived under two ids: its publish was sent {attempts[sequence]} times, and an attempt "
            f"answered 'nothing was sent' was accepted all the same"
            for sequence in sorted(republished & publisher.refused)[:5]
        ]
        log_text = server.log_text()

    return {
        "broker": kind,
        "workers": workers,
        "clients": options.clients,
        "faults": faults,
        "published": len(sent_at),
        "published_after_faults": sum(sent > faults_over for sent in sent_at.values()),
        "publish_attempts_failed": dict(publisher.failures),
        "publish_errors": publisher.errors,
        **{name: totals.get(name, 0) for name in COUNTERS},
        "republished_events": len(republished),
        "peak_server_rss_mib": round(peak / 2**20, 1),
        "run_seconds": round(run_seconds, 1),
        "drain_seconds": round(drain_seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "server_tracebacks": tracebacks(log_text),
        "examples": examples[:20],
    }
