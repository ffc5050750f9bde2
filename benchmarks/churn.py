"""Churn without loss: many clients dropping and resuming with Last-Event-ID while events are
published at a steady rate, through a graceful reload, a SIGKILLed worker and a Redis restart.

    python benchmarks/churn.py                                  # 1,000 clients, 60 s per broker
    python benchmarks/churn.py --clients 100 --seconds 15 --json
    python benchmarks/churn.py --seconds 0 --soak-seconds 3600  # only the idle soak, an hour

A run-by-hand benchmark, not a test (tests/test_churn.py runs a small one). It starts everything
it needs (``sse-flask serve`` on a free port, ``redis-server`` on another) and stops it all at the
end, on an error, on Ctrl-C and when ``--timeout`` runs out.

What happens, per broker:

- ``memory``: the in-process broker, one gevent worker; at 40 % of the run the server is
  reloaded gracefully (SIGHUP: a new worker, with a new history, takes over). A SIGKILL would be
  the same for clients: in-process history dies with its worker, by design.
- ``redis``: ``--workers`` gevent workers (4) sharing one Redis; at 30 % one worker is
  SIGKILLed, at 60 % redis-server is killed and started again, empty, ``--outage`` seconds later;
  during the outage another worker is SIGKILLed, so that its replacement starts without Redis.
- ``sentinel`` (only when asked for): ``--workers`` workers on a primary and a replica behind
  three Sentinels, with ``SSE_REDIS_WAIT_REPLICAS=1``; at 40 % the primary is SIGKILLed, the
  Sentinels promote the replica, and the old primary comes back empty as its replica (until
  then publishes answer 503: no replica confirms them).

The clients (``--clients``, spread over a few processes, raw sockets and a selector) each listen
to one or two of four channels. Each drops its connection at random (every ``--drop-every``
seconds on average; half of them stay away up to ``--away`` seconds, some reset the connection
instead of closing it) and reconnects with the id of the last event it received (a
``Last-Event-ID`` header, or the ``lastEventId`` parameter for one client in five). One thread
publishes ``--rate`` events a second, the data of each its sequence number, round-robin over the
channels, retrying a publish that failed (503, connection lost) until it is accepted. After
``--seconds`` the clients stop dropping and the publisher goes on until every client has an
event published after the run on each of its channels (at most ``--drain`` seconds).

How deliveries are counted, per client:

- expected: every event of the run on the client's channels whose accepted publish was *sent*
  after the client's stream opened with no id to resume from (its first: a client does not
  drop before it has an id);
- duplicated: an event id received twice. Shown apart, those resent in the replay that follows
  a missed notice (the resume id was unknown where the client reconnected). A sequence number
  received under two ids is "republished" instead when its publish was sent more than once (an
  attempt that got no answer may still have been accepted); one whose attempt was answered
  "nothing was sent" is reported as an error, since that answer was wrong;
- out of order: a sequence number, first received, lower than one received before it;
- lost: expected and never received, and not announced: an ``event: missed`` notice (the
  contract's answer to a resume id the broker cannot continue from: a restarted in-process
  worker, a Redis that lost its data) announces the gap between the last event received before
  it and the first received after it; the events in that gap are "announced gaps", not losses.

Also counted: connects, drops by the clients, streams the server closed (a reload, a killed
worker), connections refused (503 while Redis is away, or closed before an answer), tracebacks
in the server's log, and the server's peak RSS (master and workers, from /proc).

Exits 1 if any broker lost, duplicated or reordered a delivery, or a client never connected.

The idle soak (``--soak-seconds``, 15 by default; 3600 for the hour the README reports) opens
``--soak-streams`` streams on a fresh server, publishes nothing, and samples the server's RSS
every ``--soak-interval`` seconds: what each idle stream costs, and whether that stays flat.
``--log-dir`` keeps the servers' logs.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import tempfile
import time
import typing as t
from pathlib import Path

from harness import procs
from harness.churn.faults import run_broker
from harness.churn.launch import Timeout, log
from harness.churn.soak import soak

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

ROWS = [
    ("clients", "clients"),
    ("workers", "workers"),
    ("events published (acknowledged)", "published"),
    ("  of which after the last fault", "published_after_faults"),
    ("deliveries expected", "expected"),
    ("received", "received"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("  of which after a missed notice", "duplicated_after_missed"),
    ("out of order", "out_of_order"),
    ("missed notices", "missed_notices"),
    ("announced gaps (events)", "announced_gaps"),
    ("republished (deliveries)", "republished"),
    ("republished (events)", "republished_events"),
    ("received, never acknowledged", "unacknowledged"),
    ("connects", "connects"),
    ("drops (by the clients)", "drops"),
    ("closed by the server", "closed_by_server"),
    ("refused (503, reset)", "refused"),
    ("peak server RSS (MiB)", "peak_server_rss_mib"),
    ("run time (s)", "run_seconds"),
    ("drain (s)", "drain_seconds"),
]


def table(results: dict[str, dict[str, t.Any]]) -> str:
    names = list(results)
    width = max(len(label) for label, _ in ROWS) + 2
    lines = ["".ljust(width) + "".join(name.rjust(12) for name in names)]
    for label, key in ROWS:
        lines.append(
            label.ljust(width)
            + "".join(str(results[name].get(key, "")).rjust(12) for name in names)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument(
        "--seconds",
        type=float,
        default=60,
        help="length of the run proper, per broker; 0 skips it (soak only)",
    )
    parser.add_argument("--rate", type=float, default=50, help="events published per second")
    parser.add_argument(
        "--broker",
        choices=["memory", "redis", "both", "sentinel"],
        default="both",
        help="both: memory and redis; sentinel: a Sentinel failover, run alone",
    )
    parser.add_argument("--workers", type=int, default=4, help="gevent workers for the Redis run")
    parser.add_argument(
        "--drop-every", type=float, default=10, help="mean seconds between a client's drops"
    )
    parser.add_argument(
        "--away", type=float, default=1.5, help="longest a dropped client stays away"
    )
    parser.add_argument("--outage", type=float, default=2, help="seconds redis-server stays down")
    parser.add_argument(
        "--drain", type=float, default=30, help="longest wait for clients to catch up after the run"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=0,
        help="client processes (default: one per 500 clients, up to the cores)",
    )
    parser.add_argument(
        "--soak-seconds",
        type=float,
        default=15,
        help="idle-memory soak per broker; 0 skips it; 3600 for an hour",
    )
    parser.add_argument(
        "--soak-streams", type=int, default=0, help="idle streams in the soak (default: --clients)"
    )
    parser.add_argument(
        "--soak-interval",
        type=float,
        default=0,
        help="seconds between RSS samples in the soak (default: a 60th of it)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="give up after this many seconds (default: generous for the run asked)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="keep the servers' logs here (default: a temporary directory, removed)",
    )
    options = parser.parse_args(argv)
    options.soak_streams = options.soak_streams or options.clients
    brokers = ["memory", "redis"] if options.broker == "both" else [options.broker]
    budget = options.timeout or len(brokers) * (
        options.seconds + options.drain + options.soak_seconds + 150
    )
    deadline = time.monotonic() + budget

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * (options.clients + options.soak_streams) + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))

    def interrupted(signum: int, frame: t.Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    results: dict[str, dict[str, t.Any]] = {}
    soaks: dict[str, dict[str, t.Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sse-churn-") as directory:
        workdir = Path(directory)
        if options.log_dir is not None:
            options.log_dir.mkdir(parents=True, exist_ok=True)
            workdir = options.log_dir
        try:
            for kind in brokers:
                if options.seconds > 0:
                    results[kind] = run_broker(kind, options, workdir, deadline)
                if options.soak_seconds > 0:
                    log(
                        f"{kind}: idle soak, {options.soak_streams} streams for {options.soak_seconds:g} s"
                    )
                    soaks[kind] = soak(kind, options, workdir, deadline)
        except KeyboardInterrupt:
            log("interrupted; everything started is stopped")
            return 130
        except (Timeout, RuntimeError) as e:
            log(f"failed: {e}")
            for path in sorted(workdir.glob("gunicorn-*.log")):
                log(f"{path.name}, last lines:\n" + path.read_text(errors="replace")[-3000:])
            return 2
        finally:
            procs.stop_all()  # anything a cleanup cut short (a second Ctrl-C) left running

    failed = [
        kind
        for kind, result in results.items()
        if result["lost"]
        or result["duplicated"]
        or result["out_of_order"]
        or result["never_connected"]
        or result["wrong_channel"]
    ]
    if options.json:
        print(
            json.dumps(
                {"config": vars(options), "results": results, "soak": soaks, "ok": not failed},
                indent=2,
                default=str,
            )
        )
    else:
        if results:
            print(table(results))
        for kind, result in results.items():
            print(f"\n{kind}: " + "; ".join(result["faults"]))
            for ending, count in result["server_tracebacks"].items():
                print(f"  the server's log has {count} traceback(s) ending {ending!r}")
            if result["publish_attempts_failed"]:
                print(
                    f"  publish attempts that failed, then were retried: {result['publish_attempts_failed']}"
                )
            for example in result["examples"]:
                print(f"  {example}")
        for kind, result in soaks.items():
            print(
                f"\nidle soak, {kind}: {result['streams']} streams for {result['seconds']:g} s on {result['workers']} worker(s): "
                f"{result['per_stream_kib_first']} KiB per stream at first, {result['per_stream_kib_settled']} KiB after "
                f"{result['settled_at_seconds']:g} s, {result['per_stream_kib_last']} KiB at the end "
                f"({result['growth_since_settled_percent']} % since {result['settled_at_seconds']:g} s), baseline {result['baseline_rss_mib']} MiB"
            )
        if results:
            print(
                "\nexpected: events of the run on a client's channels, published after its first stream opened;"
                "\nlost: expected, never received, and not in a gap that an 'event: missed' notice announced"
                "\n(announced gaps: the in-process history is gone after a reload, Redis's after a restart)."
            )
            print(
                "\nOK: nothing lost, duplicated or out of order."
                if not failed
                else f"\nFAILED: {', '.join(failed)}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
