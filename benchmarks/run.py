"""Run the sse-flask benchmark: sse_flask and its peers side by side, one core each side.

    python benchmarks/run.py                 # the full run (about 14 minutes on an idle machine)
    python benchmarks/run.py --quick         # 1,000 streams, 3 s of throughput
    python benchmarks/run.py --only sse_flask,go
    python benchmarks/run.py --scale         # adds 19,000 streams on one worker, 4 x 15,000 with Redis

Writes results.md, results.json, fanout.png and latency.png to benchmarks/results/ (a --quick run to
benchmarks/results/quick/) and prints the table. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import sys
import tempfile
import time
import typing as t
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import compression, procs, report
from harness.scale import ScalePlan, run_scale
from harness.scenario import Plan, py_spy, run_scenario
from harness.servers import BENCH_DIR, SERVERS, build_go

#: the options that override a field of the Plan of the same name
_PLAN_OPTIONS = (
    "duration", "clients", "publishers", "events", "rate", "storm", "missed", "curve_duration",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1,000 streams, 3 s throughput, 10 events at 5/s, a storm of 1,000, 3 s per rate",
    )
    parser.add_argument("--only", help=f"comma-separated servers, of: {', '.join(SERVERS)}")
    parser.add_argument("--skip", help="comma-separated servers to leave out")
    parser.add_argument("--streams", help="fanout sizes, comma-separated (default 1000,5000,10000)")
    parser.add_argument("--duration", type=float, help="throughput seconds (default 10)")
    parser.add_argument("--clients", type=int, help="throughput streams (default 100)")
    parser.add_argument("--publishers", type=int, help="throughput publishers (default 4)")
    parser.add_argument("--events", type=int, help="fanout events (default 20)")
    parser.add_argument("--rate", type=float, help="fanout events per second (default 2)")
    parser.add_argument("--storm", type=int, help="reconnect storm streams (default 10000)")
    parser.add_argument(
        "--missed", type=int, help="events published while the storm's streams are away (50)"
    )
    parser.add_argument(
        "--rate-max",
        type=float,
        metavar="DELIVERIES",
        help="deliveries/s the latency curve's rates are fractions of (default: Go's throughput)",
    )
    parser.add_argument(
        "--curve-duration", type=float, help="seconds at each rate of the latency curve (5)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each measurement, wait up to this long for both cores to be under 25%% busy",
    )
    parser.add_argument("--no-throughput", action="store_true", help="fanout only")
    parser.add_argument("--no-fanout", action="store_true", help="leave out the fanout")
    parser.add_argument("--no-storm", action="store_true", help="leave out the reconnect storm")
    parser.add_argument(
        "--no-curve", action="store_true", help="leave out the latency-throughput curve"
    )
    parser.add_argument(
        "--no-gzip", action="store_true", help="leave out the SSE_COMPRESS byte saving"
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="add the scale rows: sse_flask and go at 19,000 streams on one worker, and "
        "sse_flask with Redis on 4 workers × 15,000 streams",
    )
    parser.add_argument(
        "--scale-streams",
        type=int,
        default=19000,
        help="--scale: the one-worker fanout size (default 19000)",
    )
    parser.add_argument(
        "--scale-workers", type=int, default=4, help="--scale: workers of the Redis row (default 4)"
    )
    parser.add_argument(
        "--scale-per-worker",
        type=int,
        default=15000,
        help="--scale: streams per worker of the Redis row (default 15000); 0 leaves the row out",
    )
    parser.add_argument(
        "--scale-per-process",
        type=int,
        default=15000,
        help="--scale: streams per load generator process of the Redis row (default 15000)",
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default benchmarks/results, or results/quick)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="RESULTS_JSON",
        help="only rewrite the report from a results.json",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the sse_flask worker over each measurement window",
    )
    args = parser.parse_args(argv)

    if args.report:
        saved = json.loads(args.report.read_text())
        _write_report(saved["results"], saved["meta"], args.out or args.report.parent)
        return 0
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy: pip install -r benchmarks/requirements.txt")
    names = _select(args.only, args.skip)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) > 1 else (cpus[0], cpus[0])
    if len(cpus) < 2:
        print("warning: one CPU only; the server and the load generator share it", file=sys.stderr)
    os.sched_setaffinity(0, {load_cpu})  # this runner is part of the load side

    plan = Plan(server_cpu=server_cpu, load_cpu=load_cpu)
    if args.quick:
        plan = Plan(
            server_cpu=server_cpu,
            load_cpu=load_cpu,
            duration=3.0,
            streams=(1000,),
            events=10,
            rate=5.0,
            storm=1000,
            curve_duration=3.0,
        )
    overrides: dict[str, t.Any] = {}
    if args.streams:
        overrides["streams"] = tuple(int(n) for n in args.streams.split(","))
    overrides["quiet_wait"] = args.wait_quiet
    for key in _PLAN_OPTIONS:
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    plan = Plan(**{**plan.__dict__, **overrides})
    out = args.out or (BENCH_DIR / "results" / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)

    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    # SIGINT too: a shell that starts the run in the background makes it ignored otherwise.
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    results: list[dict[str, t.Any]] = []
    saved: list[dict[str, t.Any]] = []
    rate_max: tuple[float, str] | None = None
    started = time.monotonic()
    try:
        binaries = build_go(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sse-flask-bench"
        )
        with tempfile.TemporaryDirectory(prefix="sse-bench-") as tmp:

            def measure(name: str, mode: str, streams: int, offered: float | None = None) -> None:
                what = f"{offered:,.0f} deliveries/s offered, " if offered is not None else ""
                print(
                    f"[{time.monotonic() - started:5.0f} s] {name}: {mode}, {what}{streams:,} streams",
                    flush=True,
                )
                profile = None
                if args.profile and SERVERS[name].ours:
                    suffix = f"-{offered:.0f}" if offered is not None else ""
                    profile = out / f"profile-{name}-{mode}-{streams}{suffix}.speedscope.json"
                result = run_scenario(
                    SERVERS[name], mode, streams, plan, binaries, Path(tmp),
                    profile=profile, offered=offered,
                )  # fmt: skip
                results.append(result)
                print("         " + _one_line(result), flush=True)

            scenarios = [] if args.no_throughput else [("throughput", plan.clients)]
            scenarios += [] if args.no_fanout else [("fanout", n) for n in plan.streams]
            scenarios += [] if args.no_storm else [("storm", plan.storm)]
            for mode, streams in scenarios:
                for name in names:
                    measure(name, mode, streams)
            if not args.no_curve:
                rate_max = _rate_max(args.rate_max, results)
                if rate_max is None:
                    print(
                        "         no latency curve: it needs Go's throughput from this run "
                        "(go in --only, and no --no-throughput) or --rate-max",
                        flush=True,
                    )
                else:
                    for fraction in plan.curve:
                        for name in names:
                            measure(name, "rate", plan.clients, offered=fraction * rate_max[0])
            if args.scale:
                _scale_rows(args, names, plan, cpus, binaries, Path(tmp), started, results)
            if "sse_flask" in names and not args.no_gzip:
                print(
                    f"[{time.monotonic() - started:5.0f} s] sse_flask: gzip byte saving", flush=True
                )
                try:
                    saved = compression.measure(Path(tmp), cpu=server_cpu)
                except Exception as e:  # a failure here must not lose the figures already taken
                    print(f"         FAILED: {e}", flush=True)
                for row in saved:
                    print(f"         {row['kind']}: {row['saving']:.0%} fewer bytes", flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping every process and writing what was measured", file=sys.stderr)
    except RuntimeError as e:  # the Go build
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
    if not results:
        return 1
    meta = {
        "when": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}",
        "server_cpu": server_cpu,
        "load_cpu": load_cpu,
        "environment": ", ".join(
            f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("SSE_")
        ),
        "seconds": round(time.monotonic() - started),
        "loadavg": loadavg,
        **{key: getattr(plan, key) for key in (*_PLAN_OPTIONS, "pool")},
        "streams": list(plan.streams),
        "curve": list(plan.curve),
        "rate_max": rate_max[0] if rate_max else None,
        "rate_max_source": rate_max[1] if rate_max else None,
        "scale": args.scale,
        "compression": saved,
    }
    _write_report(results, meta, out)
    print(f"total {meta['seconds']} s")
    return 0


def _write_report(results: list[dict[str, t.Any]], meta: dict[str, t.Any], out: Path) -> None:
    text = report.markdown(results, meta)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=1) + "\n"
    )
    drawn = [
        path
        for path, draw in ((out / "fanout.png", report.plot), (out / "latency.png", report.plot_curve))
        if draw(results, path)
    ]  # fmt: skip
    print()
    print(text)
    print(
        "written: " + ", ".join(str(p) for p in [out / "results.md", out / "results.json", *drawn])
    )


def _rate_max(given: float | None, results: list[dict[str, t.Any]]) -> tuple[float, str] | None:
    """The deliveries/s the latency curve's rates are fractions of, and where it came from:
    ``--rate-max``, or Go's throughput measured in this run."""
    if given is not None:
        return given, "--rate-max"
    for r in results:
        if r["server"] == "go" and r["mode"] == "throughput" and not r.get("error") and "load" in r:
            return float(r["load"]["deliveries_per_second"]), "Go's throughput in this run"
    return None


#: the servers measured at the one-worker scale size
SCALE_ONE = ("sse_flask", "go")


def _scale_rows(
    args: argparse.Namespace,
    names: list[str],
    plan: Plan,
    cpus: list[int],
    binaries: dict[str, Path],
    tmp: Path,
    started: float,
    results: list[dict[str, t.Any]],
) -> None:
    """The ``--scale`` rows, appended to ``results`` as each is measured: the one-worker
    fanout size for the servers of SCALE_ONE, then sse_flask with Redis on several workers."""
    for name in (n for n in names if n in SCALE_ONE):
        streams = args.scale_streams
        print(
            f"[{time.monotonic() - started:5.0f} s] {name}: fanout, {streams:,} streams", flush=True
        )
        results.append(run_scenario(SERVERS[name], "fanout", streams, plan, binaries, tmp))
        print("         " + _one_line(results[-1]), flush=True)
    if not args.scale_per_worker:
        return
    scale = ScalePlan(
        cpus=frozenset(cpus),
        workers=args.scale_workers,
        streams=args.scale_per_worker,
        per_process=args.scale_per_process,
    )
    print(
        f"[{time.monotonic() - started:5.0f} s] sse_flask-redis: scale, "
        f"{scale.workers} workers × {scale.streams:,} streams",
        flush=True,
    )
    results.append(run_scale(scale, binaries, tmp))
    print("         " + _one_line(results[-1]), flush=True)


def _select(only: str | None, skip: str | None) -> list[str]:
    names = [name for name, server in SERVERS.items() if server.default]
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names + (skip.split(",") if skip else []) if n.strip() not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server {', '.join(unknown)}; known: {', '.join(SERVERS)}")
    if skip:
        names = [n for n in names if n not in {s.strip() for s in skip.split(",")}]
    return names


def _one_line(r: dict[str, t.Any]) -> str:
    if r.get("error"):
        return "FAILED: " + r["error"].splitlines()[0]
    load = r["load"]
    lat = load.get("latency_ms") or {}
    parts = [f"held {r['subscribed']:,}", f"lost {load['lost']:,}/{load['expected']:,}"]
    if r["mode"] in ("throughput", "rate"):
        parts.insert(0, f"{load['deliveries_per_second']:,.0f} deliveries/s")
    if r["mode"] == "rate":
        parts.append(f"late {load['publishes_late']:,}")
    if r["mode"] == "storm" and "storm" in load:
        storm = load["storm"]
        replay = (
            f"replayed {report.seconds(storm['recovered_seconds'])}, missed lost "
            f"{storm['missed_lost']:,}"
            if SERVERS[r["server"]].replays
            else "no replay"
        )
        parts = [
            f"held {r['subscribed']:,}",
            f"connect {r['connect_seconds']:.2f} s",
            f"storm: headers {report.seconds(storm['headers_seconds'])}, counted "
            f"{report.seconds(storm['counted_seconds'])}, {replay}",
            f"streams with duplicates {storm['streams_with_duplicate']:,}",
            f"backlog {r.get('listen_backlog')}, listen overflows "
            f"{r.get('tcp_counters', {}).get('ListenOverflows', 0):,}",
        ]
    elif lat:
        parts.append(f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} max {lat['max']:.1f} ms")
    parts.append(
        f"server CPU {r['server_cpu_percent'] + r['redis_cpu_percent']:.0f}%, load CPU {r['load_cpu_percent']:.0f}%"
    )
    parts.append(f"{r['memory_per_stream'] / 1024:.1f} KiB/stream")
    if r["mode"] == "scale":
        parts.append("streams per worker " + ", ".join(f"{n:,}" for n in r["per_worker"]))
    return "; ".join(parts)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _interrupted(signum: int, frame: t.Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
