"""The report: a markdown table of every figure with sse_flask's ratio to each peer, a PNG
of fanout latency against the number of streams, and one of p99 latency against the offered
rate (the latency-throughput curve)."""

from __future__ import annotations

import typing as t
from pathlib import Path

from .servers import SERVERS

__all__ = ["markdown", "plot", "plot_curve", "seconds", "storm_seconds"]

Result = dict[str, t.Any]


def _find(
    results: list[Result], server: str, mode: str, streams: int | None = None
) -> Result | None:
    for r in results:
        if (
            r["server"] == server
            and r["mode"] == mode
            and (streams is None or r["streams"] == streams)
        ):
            return r
    return None


def _ok(r: Result | None) -> bool:
    return r is not None and "load" in r and not r.get("error")


def _latency(r: Result | None, key: str) -> float | None:
    if r is None or "load" not in r or not r["load"].get("latency_ms"):
        return None
    return float(r["load"]["latency_ms"][key])


def storm_seconds(r: Result | None) -> float | None:
    """The storm's figure: for a server that replays, the time until every stream had every
    event it missed; for one that does not, until every stream had its response headers and
    the server's stats counted them all. None if that never happened."""
    if not _ok(r) or r is None or "storm" not in r["load"]:
        return None
    storm = r["load"]["storm"]
    if storm["streams"] < 0.99 * r["streams"]:
        return None
    if SERVERS[r["server"]].replays:
        return None if storm["recovered_seconds"] is None else float(storm["recovered_seconds"])
    if storm["headers_seconds"] is None or storm["counted_seconds"] is None:
        return None
    return max(float(storm["headers_seconds"]), float(storm["counted_seconds"]))


def _connect_seconds(r: Result | None, n: int) -> float | None:
    """The time to open and register ``n`` streams, 500 at a time (if it held 99% of them)."""
    if not _ok(r) or r is None or r.get("subscribed", 0) < 0.99 * n:
        return None
    return float(r["connect_seconds"])


def _figures(results: list[Result], server: str, top: int) -> dict[str, float | None]:
    """The headline figures of ``server``: throughput, fanout at ``top`` streams, memory,
    the time to connect ``top`` streams (or the storm's, without a fanout), the storm."""
    thr = _find(results, server, "throughput")
    fan = _find(results, server, "fanout", top)
    storm = _find(results, server, "storm")
    connect = _connect_seconds(fan, top) if fan else None
    if fan is None and storm is not None:
        connect = _connect_seconds(storm, storm["streams"])
    return {
        "deliveries": thr["load"]["deliveries_per_second"] if thr and "load" in thr else None,
        # A server that held fewer than 99% of the streams has no figure to compare.
        "p99": _latency(fan, "p99") if fan and fan.get("subscribed", 0) >= 0.99 * top else None,
        "memory": fan["memory_per_stream"] / 1024 if fan and "memory_per_stream" in fan else None,
        "connect": connect,
        "storm": storm_seconds(storm),
    }


#: figure key -> (heading, larger is better)
_COLUMNS = {
    "deliveries": ("throughput, deliveries/s", True),
    "p99": ("fanout p99", False),
    "memory": ("memory per idle stream", False),
    "connect": ("connect-and-register", False),
    "storm": ("reconnect storm", False),
}


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f} s"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def _spread(latency: dict[str, float]) -> str:
    """A latency summary's ``p50 / p90 / p99 / max``, as the tables show it."""
    return " / ".join(_ms(latency.get(key)) for key in ("p50", "p90", "p99", "max"))


def _pct(value: t.Any) -> str:
    return "—" if value is None else f"{value:.0f}%"


def markdown(results: list[Result], meta: dict[str, t.Any]) -> str:
    # The several-worker scale row has a section of its own.
    servers = [
        name
        for name in SERVERS
        if any(r["server"] == name and r["mode"] != "scale" for r in results)
    ]
    ours = [name for name in servers if SERVERS[name].ours]
    peers = [name for name in servers if not SERVERS[name].ours]
    fanout_sizes = sorted({r["streams"] for r in results if r["mode"] == "fanout"})
    # The headline compares every server: at the largest size all of them were measured at
    # (the scale size is sse_flask's and Go's only).
    common = [n for n in fanout_sizes if all(_find(results, s, "fanout", n) for s in servers)]
    top = common[-1] if common else 0
    figures = {name: _figures(results, name, top) for name in servers}
    out: list[str] = []
    out.append("# sse-flask benchmark\n")
    out.append(
        f"{meta['when']}, {meta['machine']}. Server side pinned to CPU {meta['server_cpu']}, load generator to "
        f"CPU {meta['load_cpu']}, loopback. Throughput: {meta['clients']} clients, {meta['publishers']} "
        f"publishers back to back for {meta['duration']:g} s. Fanout: {meta['events']} events at "
        f"{meta['rate']:g}/s to idle streams. Environment: {meta['environment'] or 'no SSE_* variables'}. "
        f"Load average at the start: {meta.get('loadavg', '?')}; {meta.get('seconds', '?')} s in all.\n"
    )
    busy = [r["background_busy_percent"] for r in results if r.get("background_busy_percent")]
    if busy:
        worst = max(max(b) for b in busy)
        mean = sum(sum(b) for b in busy) / (2 * len(busy))
        out.append(
            f"Background load on the two cores just before each measurement (nothing of ours running): "
            f"mean {mean:.0f}%, worst {worst:.0f}%"
            + (
                " — other work shared the machine; compare rows within this run only.\n"
                if worst > 20
                else ".\n"
            )
        )
    out.append("## Headline\n")
    out.append(
        f"| server | throughput, deliveries/s | loss | server CPU | load CPU | fanout p50 at {top:,} | "
        f"fanout p99 at {top:,} | fanout loss | memory per idle stream at {top:,} |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in servers:
        thr = _find(results, name, "throughput")
        fan = _find(results, name, "fanout", top)
        f = figures[name]
        cells = [f"**{SERVERS[name].title}**" if SERVERS[name].ours else SERVERS[name].title]
        cells.append(_num(f["deliveries"]))
        cells.append(_loss(thr))
        cells.append(_cpu_text(thr, "server"))
        cells.append(_cpu_text(thr, "load"))
        cells.append(_ms(_latency(fan, "p50")))
        p99 = _ms(_latency(fan, "p99")) if fan and _latency(fan, "p99") is not None else ""
        held = _held(fan, top)
        cells.append(f"{p99} ({held})" if p99 and held else p99 or held or "—")
        cells.append(_loss(fan))
        cells.append(_num(f["memory"], 1, " KiB"))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")

    if ours and peers:
        out.append("## sse_flask against each peer\n")
        out.append(
            "Ratio of sse_flask's figure to the peer's. Throughput: above 1 is better; latency and memory: "
            "below 1 is better. ✓ marks where sse_flask is ahead.\n"
        )
        heading = ["sse_flask row", "peer"] + [f"{_COLUMNS[k][0]}" for k in _COLUMNS]
        out.append("| " + " | ".join(heading) + " |")
        out.append("|---|---|" + "---:|" * len(_COLUMNS))
        for mine in ours:
            for peer in peers:
                cells = [SERVERS[mine].title, SERVERS[peer].title]
                for key, (_, larger_better) in _COLUMNS.items():
                    a, b = figures[mine][key], figures[peer][key]
                    if a is None or b is None or b == 0:
                        cells.append("—")
                        continue
                    ratio = a / b
                    ahead = ratio > 1 if larger_better else ratio < 1
                    cells.append(f"{ratio:.2f}×" + (" ✓" if ahead else ""))
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(_ranking(servers, figures, ours))

    if any(_find(results, name, "throughput") is not None for name in servers):
        out.append("## Throughput in detail\n")
        out.append(
            "| server | published | expected | received | lost | dup | disconnects | latency p50 / p90 / p99 / max "
            "| publish round trip p50 / p99 | server CPU (of which redis) | load CPU | RSS |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
        for name in servers:
            r = _find(results, name, "throughput")
            if not _ok(r) or r is None:
                out.append(f"| {SERVERS[name].title} | failed: see below |" + " |" * 10)
                continue
            load = r["load"]
            lat = load.get("latency_ms") or {}
            rtt = load.get("publish_rtt_ms") or {}
            out.append(
                f"| {SERVERS[name].title} | {load['published']:,} | {load['expected']:,} | {load['received']:,} | "
                f"{load['lost']:,} | {load['duplicates']:,} | {load['disconnects']:,} | "
                f"{_spread(lat)} | "
                f"{_ms(rtt.get('p50'))} / {_ms(rtt.get('p99'))} | {_server_cpu_text(r)} | "
                f"{_cpu_text(r, 'load')} | {r['rss_after'] / 2**20:,.0f} MiB |"
            )
        out.append("")

    out.append("## Fanout in detail\n")
    out.append(
        "| server | streams | held | connect | latency p50 / p90 / p99 / max | lost | server CPU | load CPU "
        "| RSS empty → idle → after | per idle stream |"
    )
    out.append("|---|---:|---:|---:|---|---:|---:|---:|---|---:|")
    for name in servers:
        for n in fanout_sizes:
            r = _find(results, name, "fanout", n)
            if r is None:
                continue
            if not _ok(r):
                held = f"{r.get('subscribed', 0):,}" if "subscribed" in r else "—"
                out.append(
                    f"| {SERVERS[name].title} | {n:,} | {held} | failed: see below |" + " |" * 6
                )
                continue
            lat = r["load"].get("latency_ms") or {}
            out.append(
                f"| {SERVERS[name].title} | {n:,} | {r['subscribed']:,} | {r['connect_seconds']:.1f} s | "
                f"{_spread(lat)} | "
                f"{_loss(r)} | {_server_cpu_text(r)} | {_cpu_text(r, 'load')} | "
                f"{r['rss_empty'] / 2**20:,.0f} → {r['rss_idle'] / 2**20:,.0f} → {r['rss_after'] / 2**20:,.0f} MiB | "
                f"{r['memory_per_stream'] / 1024:,.1f} KiB |"
            )
    out.append("")

    out.extend(_storm_section(results, servers, meta))
    out.extend(_curve_section(results, servers, ours, peers, meta))

    out.extend(_scale(results))
    if meta.get("compression"):
        out.append("## gzip (SSE_COMPRESS)\n")
        out.append(
            "The same JSON events read by two sse_flask streams, one asking for gzip: body bytes received. "
            "Events 10 ms apart, so each is its own write with its own sync flush (the case that compresses worst).\n"
        )
        out.append("| events | count | bytes without gzip | bytes with gzip | saving |")
        out.append("|---|---:|---:|---:|---:|")
        for row in meta["compression"]:
            out.append(
                f"| {row['kind']} | {row['events']:,} | {row['bytes_plain']:,} | {row['bytes_gzip']:,} | {row['saving']:.0%} |"
            )
        out.append("")
    problems = [r for r in results if r.get("error") or ("load" in r and _load_problems(r))]
    if problems:
        out.append("## Problems seen\n")
        for r in problems:
            text = r.get("error") or _load_problems(r)
            out.append(
                f"- **{SERVERS[r['server']].title}**, {r['mode']} with {r['streams']:,} streams:"
            )
            out.append("  ```")
            out.extend("  " + line for line in str(text).strip().splitlines()[:25])
            out.append("  ```")
        out.append("")
    out.append(
        "Memory is the VmRSS of the server's whole process session (gunicorn master and worker, uvicorn, "
        "the Go binary), plus its redis-server for the Redis rows; per idle stream is (RSS with every stream "
        "open and idle − RSS with none) ÷ streams held. CPU is utime+stime from /proc over the measurement "
        "window, in % of one core; the server side (with its redis-server) shares one core, so 100% means "
        "the server was the bottleneck, and a load CPU near 100% means the load generator was. In brackets: "
        "how busy the whole core was (/proc/stat), which adds the kernel's loopback TCP work done in softirq "
        "and anything else that ran there. When neither side is near 100%, throughput is bound by the "
        "publishers' round trips (each of the 4 waits for its answer before the next publish).\n"
    )
    return "\n".join(out)


def _scale(results: list[Result]) -> list[str]:
    """The scale section: sse_flask beside Go on one worker up to the scale size, and the
    several-worker row, when the run has them (``--scale``)."""
    several = [r for r in results if r["mode"] == "scale"]
    sizes = sorted(
        {r["streams"] for r in results if r["mode"] == "fanout" and r["server"] == "sse_flask"}
    )
    both = [n for n in sizes if _find(results, "go", "fanout", n)]
    if not several and not (both and both[-1] > 10000):
        return []
    out = ["## Scale\n"]
    if both:
        out.append(
            "One worker (one process, pinned to one core), idle streams, the fanout events above. "
            "One process may hold at most 20,000 open files here, so one worker tops out just under "
            "20,000 streams. Ratio: sse_flask ÷ Go, below 1 is better.\n"
        )
        out.append(
            "| streams | sse_flask held | sse_flask p50 / p99 | Go p50 / p99 | p99 ratio | lost (sse_flask, Go) "
            "| sse_flask per idle stream | Go per idle stream | memory ratio |"
        )
        out.append("|---:|---:|---|---|---:|---|---:|---:|---:|")
        for n in both:
            ours, go = _find(results, "sse_flask", "fanout", n), _find(results, "go", "fanout", n)
            mine, theirs = _figures(results, "sse_flask", n), _figures(results, "go", n)
            out.append(
                f"| {n:,} | {_num(ours.get('subscribed') if ours else None)} | {_ms(_latency(ours, 'p50'))} / {_ms(_latency(ours, 'p99'))} | "
                f"{_ms(_latency(go, 'p50'))} / {_ms(_latency(go, 'p99'))} | {_ratio(mine['p99'], theirs['p99'])} | "
                f"{_loss(ours)}, {_loss(go)} | {_num(mine['memory'], 1, ' KiB')} | "
                f"{_num(theirs['memory'], 1, ' KiB')} | {_ratio(mine['memory'], theirs['memory'])} |"
            )
        out.append("")
    for r in several:
        out.append(
            f"Several workers: `sse-flask serve --workers {r['workers']} --broker redis://...`, "
            f"{r['streams']:,} idle streams held by {r.get('load_processes', '?')} load generator processes, each "
            "dialling from its own address of 127.0.0.0/8, and one more publishing "
            f"{r['events']} events at {r['rate']:g}/s, each reaching every stream. The workers, redis-server and "
            "the load generators share both cores (four workers cannot be pinned to one core), so CPU is in % "
            "of one core and the latency includes the load side's share of the same cores. Latency is "
            "CLOCK_REALTIME at receipt in one process minus CLOCK_REALTIME at the send in the publisher. "
            "Per worker: its socket descriptors less those it had before the streams opened. Memory per "
            "stream: the growth of the workers' RSS (master and redis-server apart) ÷ streams held.\n"
        )
        out.append(
            "| workers × streams | held | per worker | connect | latency p50 / p90 / p99 / max | lost "
            "| server CPU (of which redis) | load CPU | workers' RSS empty → idle | per stream | redis RSS "
            "| load generators' RSS |"
        )
        out.append("|---|---:|---|---:|---|---:|---:|---:|---|---:|---:|---:|")
        if not _ok(r):
            out.append(
                f"| {r['workers']} × {r['streams'] // r['workers']:,} | failed: see below |"
                + " |" * 10
            )
            out.append("")
            continue
        lat = r["load"].get("latency_ms") or {}
        out.append(
            f"| {r['workers']} × {r['streams'] // r['workers']:,} | {r['subscribed']:,} | "
            f"{', '.join(f'{n:,}' for n in r['per_worker'])} | {r['connect_seconds']:.1f} s | "
            f"{_spread(lat)} | "
            f"{_loss(r)} | {_server_cpu_text(r)} | {r['load_cpu_percent']:.0f}% | "
            f"{r['rss_empty'] / 2**20:,.0f} → {r['rss_idle'] / 2**20:,.0f} MiB | "
            f"{r['memory_per_stream'] / 1024:,.1f} KiB | {r['redis_rss_idle'] / 2**20:,.0f} MiB | "
            f"{r['load_rss_idle'] / 2**20:,.0f} MiB |"
        )
        out.append("")
    return out


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def _server_cpu(r: Result | None) -> float | None:
    return (
        None
        if r is None or "server_cpu_percent" not in r
        else r["server_cpu_percent"] + r["redis_cpu_percent"]
    )


def _server_cpu_text(r: Result) -> str:
    text = _cpu_text(r, "server")
    if r.get("redis_cpu_percent"):
        text += f", redis {r['redis_cpu_percent']:.0f}%"
    return text


def _cpu_text(r: Result | None, side: str) -> str:
    """The side's processes' CPU, and in brackets how busy its whole core was."""
    if r is None or f"{side}_cpu_percent" not in r:
        return "—"
    value = _server_cpu(r) if side == "server" else r["load_cpu_percent"]
    core = r.get(f"{side}_core_busy_percent")
    return _pct(value) + (f" ({core:.0f}%)" if core is not None else "")


def _loss(r: Result | None) -> str:
    if r is None or "load" not in r:
        return "—"
    load = r["load"]
    if not load.get("expected"):
        return "—"
    return f"{load['lost']:,} ({100 * load['lost'] / load['expected']:.2f}%)"


def _held(r: Result | None, top: int) -> str:
    """Empty if every stream was held, else how many, or "failed"."""
    if r is None:
        return ""
    if "subscribed" in r and r["subscribed"] < top:
        return f"held {r['subscribed']:,} of {top:,}"
    return "failed" if not _ok(r) else ""


def _load_problems(r: Result) -> str:
    load = r["load"]
    lines = []
    if load.get("connect_stalled"):
        lines.append(f"connect: {load['connect_stalled']}")
    for message, count in (load.get("stream_errors") or {}).items():
        lines.append(f"{count} streams: {message}")
    for message, count in (load.get("publish_errors") or {}).items():
        lines.append(f"{count} publishes: {message}")
    if r.get("contended"):
        lines.append(
            f"the server's core was {r['server_core_busy_percent']:.0f}% busy but the server got "
            f"{_server_cpu(r):.0f}%: other processes competed for the core, so this figure understates the server"
        )
    storm = load.get("storm") or {}
    if storm and storm["streams"] < r["subscribed"]:
        lines.append(
            f"only {storm['streams']:,} of the {r['subscribed']:,} streams received the event "
            "published before the drop, and took part in the storm"
        )
    if storm.get("stale_after_drop"):
        lines.append(
            f"the server still counted {storm['stale_after_drop']:,} streams "
            f"{storm['release_seconds']:.0f} s after they were dropped"
        )
    if r["mode"] == "fanout" and load.get("out_of_order"):
        lines.append(
            f"{load['out_of_order']:,} deliveries arrived out of publish order (one publisher)"
        )
    if load.get("timed_out"):
        lines.append("the load generator hit its deadline")
    return "\n".join(lines)


def _ranking(
    servers: list[str], figures: dict[str, dict[str, float | None]], ours: list[str]
) -> str:
    lines = []
    for mine in ours:
        firsts, behind = [], []
        for key, (heading, larger_better) in _COLUMNS.items():
            mine_value = figures[mine][key]
            if mine_value is None:
                behind.append(f"{heading} (no figure)")
                continue
            better = [
                SERVERS[other].title
                for other in servers
                if other not in ours and figures[other][key] is not None
                and ((figures[other][key] > mine_value) if larger_better else (figures[other][key] < mine_value))
            ]  # fmt: skip
            if better:
                behind.append(f"{heading} (behind {', '.join(better)})")
            else:
                firsts.append(heading)
        lines.append(
            f"- **{SERVERS[mine].title}**: ahead of every peer in "
            f"{', '.join(firsts) or 'no column'}"
            + (f"; {'; '.join(behind)}" if behind else "")
            + "."
        )
    return "\n".join(lines) + "\n"


def plot(results: list[Result], path: Path) -> bool:
    """Draw p99 (solid) and p50 (dotted) fanout latency against streams, a line per server.

    Returns ``False`` without drawing if matplotlib is missing.
    """
    figure = _new_plot()
    if figure is None:
        return False
    fig, ax = figure
    drawn = False
    sizes: set[int] = set()
    for index, (name, server) in enumerate(SERVERS.items()):
        # Points where the server held at least 99% of the streams; hollow if not all of them.
        points = sorted(
            (r["streams"], _latency(r, "p99"), _latency(r, "p50"), r["subscribed"] < r["streams"])
            for r in results
            if r["server"] == name
            and r["mode"] == "fanout"
            and _ok(r)
            and r.get("subscribed", 0) >= 0.99 * r["streams"]
        )
        points = [p for p in points if p[1] is not None]
        if not points:
            continue
        color = f"C{index}"
        xs = [p[0] for p in points]
        sizes.update(xs)
        width = 2.6 if server.ours else 1.6
        ax.plot(
            xs,
            [p[1] for p in points],
            marker="o",
            color=color,
            linewidth=width,
            label=f"{server.title} p99",
        )
        for x, p99, _, partial in points:
            if partial:
                ax.plot([x], [p99], marker="o", markersize=9, markerfacecolor="white", color=color)
        ax.plot(xs, [p[2] for p in points], linestyle=":", color=color, linewidth=1.2)
        drawn = True
    if not drawn:
        _close_plot(fig)
        return False
    ax.set_xticks(sorted(sizes))
    ax.set_xticklabels([f"{n:,}" for n in sorted(sizes)])
    ax.set_xlabel("idle streams (a hollow marker: the server held fewer than all, at least 99%)")
    _save_plot(
        fig,
        ax,
        path,
        ylabel="fanout latency, ms (log scale; solid p99, dotted p50)",
        title="Fanout latency against streams, one core each side",
    )
    return True


def _new_plot() -> tuple[t.Any, t.Any] | None:
    """A figure and its axes for a plot, the same size for every plot; ``None`` if
    matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt.subplots(figsize=(9, 5.5), dpi=120)


def _save_plot(fig: t.Any, ax: t.Any, path: Path, *, ylabel: str, title: str) -> None:
    """The plots' common finish: a log latency axis, grid and legend, written to ``path``."""
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    _close_plot(fig)


def _close_plot(fig: t.Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


def _storm_section(results: list[Result], servers: list[str], meta: dict[str, t.Any]) -> list[str]:
    rows = [(name, r) for name in servers if (r := _find(results, name, "storm")) is not None]
    if not rows:
        return []
    n = rows[0][1]["streams"]
    out = ["## Reconnect storm\n"]
    out.append(
        f"{n:,} streams, each having received one event, are closed by the client side at once; "
        f"{meta.get('missed', 50)} events are published; then all of them reconnect at once with "
        "`Last-Event-ID`. *Storm*: for a server that replays (sse_flask), the time from the start of the "
        "reconnect until every stream has every event it missed; for one that does not (every peer), the "
        "plain reconnect: until every stream has its response headers and the server's `/stats` counts "
        "them all. *Connect-and-register*: opening the streams in the first place, 500 at a time, each "
        "batch counted by `/stats` before the next (no backlog overflow), in the fanout run at the same "
        "size and in this run. *Backlog*: the listen socket's accept queue limit (`ss`, capped at "
        "net.core.somaxconn); overflows, drops and SYN cookies are the host's TcpExt counters over the "
        "measurement (a dropped SYN is retried by the client after 1 s, then 3 s).\n"
    )
    out.append(
        "| server | storm | measured as | all headers | all counted by /stats | per stream: headers p50 / p99 "
        "| per stream: replayed p50 / p99 | missed events lost (streams) | streams with duplicates "
        "| connect-and-register (fanout) | connect-and-register (this run) | backlog "
        "| listen overflows / drops / SYN cookies | server CPU |"
    )
    out.append("|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|")
    for name, r in rows:
        title = SERVERS[name].title
        if not _ok(r) or "storm" not in r["load"]:
            out.append(f"| {title} | failed: see below |" + " |" * 12)
            continue
        storm = r["load"]["storm"]
        replays = SERVERS[name].replays
        figure = seconds(storm_seconds(r))
        if storm["streams"] < 0.99 * n:
            figure = f"{storm['streams']:,} of {n:,} streams: see below"
        elif storm_seconds(r) is None:
            done = storm["recovered"] if replays else storm["reconnected"]
            figure = f"not all: {done:,} of {storm['streams']:,}"
        headers, recovered = storm.get("headers_ms") or {}, storm.get("recovered_ms") or {}
        tcp = r.get("tcp_counters") or {}
        fan = _find(results, name, "fanout", n)
        out.append(
            f"| {title} | {figure} | {'replay' if replays else 'plain reconnect (no replay)'} | "
            f"{seconds(storm['headers_seconds'])} | {seconds(storm['counted_seconds'])} | "
            f"{_ms(headers.get('p50'))} / {_ms(headers.get('p99'))} | "
            + (
                f"{_ms(recovered.get('p50'))} / {_ms(recovered.get('p99'))} | "
                if replays
                else "— | "
            )
            + (
                f"{storm['missed_lost']:,} ({storm['streams_with_loss']:,}) | "
                if replays
                else "— | "
            )
            + f"{storm['streams_with_duplicate']:,} | {seconds(_connect_seconds(fan, n))} | "
            f"{seconds(_connect_seconds(r, n))} | {r.get('listen_backlog') or '?'} | "
            f"{tcp.get('ListenOverflows', 0):,} / {tcp.get('ListenDrops', 0):,} / "
            f"{tcp.get('SyncookiesSent', 0):,} | {_server_cpu_text(r)} |"
        )
    out.append("")
    return out


def _curve(results: list[Result], server: str) -> list[Result]:
    return sorted(
        (r for r in results if r["server"] == server and r["mode"] == "rate"),
        key=lambda r: float(r["offered"]),
    )


def _curve_section(
    results: list[Result],
    servers: list[str],
    ours: list[str],
    peers: list[str],
    meta: dict[str, t.Any],
) -> list[str]:
    if not any(r["mode"] == "rate" for r in results):
        return []
    top = meta.get("rate_max") or 1.0
    out = ["## Latency against offered rate\n"]
    out.append(
        f"{meta['clients']} streams; events published at a fixed rate, open loop, for "
        f"{meta.get('curve_duration', 5):g} s at each rate: every event is stamped with its scheduled "
        f"send time and handed then to whichever of {meta.get('pool', 64)} concurrent publishers is free, "
        "so a slow answer delays no later publish and the wait for a publisher counts in the latency (no "
        "coordinated omission); *late*: publishes issued more than 1 ms after their scheduled time, or "
        "never, because no publisher was free before the end of the window. "
        f"The rates are fractions of {top:,.0f} deliveries/s ({meta.get('rate_max_source') or '?'}).\n"
    )
    out.append(
        "| server | offered deliveries/s | of the maximum | achieved deliveries/s | latency p50 | latency p99 "
        "| loss | late publishes | server CPU | load CPU |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in servers:
        for r in _curve(results, name):
            title, offered = SERVERS[name].title, float(r["offered"])
            if not _ok(r):
                out.append(f"| {title} | {offered:,.0f} | failed: see below |" + " |" * 7)
                continue
            load = r["load"]
            out.append(
                f"| {title} | {offered:,.0f} | {offered / top:.0%} | {load['deliveries_per_second']:,.0f} | "
                f"{_ms(_latency(r, 'p50'))} | {_ms(_latency(r, 'p99'))} | {_loss(r)} | "
                f"{load['publishes_late']:,} of {load['published'] + load['publish_failed'] + load['publishes_unissued']:,}"
                + (
                    f" ({load['publishes_unissued']:,} never issued)"
                    if load["publishes_unissued"]
                    else ""
                )
                + " | "
                f"{_server_cpu_text(r)} | {_cpu_text(r, 'load')} |"
            )
    out.append("")
    offered_rates = sorted({float(r["offered"]) for r in results if r["mode"] == "rate"})
    if ours and peers:
        out.append(
            "p99 latency, sse_flask's ÷ the peer's, at each offered rate (below 1 is better; ✓ where "
            "sse_flask is ahead).\n"
        )
        out.append(
            "| sse_flask row | peer | " + " | ".join(f"{o / top:.0%}" for o in offered_rates) + " |"
        )
        out.append("|---|---|" + "---:|" * len(offered_rates))
        for mine in ours:
            for peer in peers:
                cells = [SERVERS[mine].title, SERVERS[peer].title]
                mine_p99 = {float(r["offered"]): _latency(r, "p99") for r in _curve(results, mine)}
                peer_p99 = {float(r["offered"]): _latency(r, "p99") for r in _curve(results, peer)}
                for o in offered_rates:
                    a, b = mine_p99.get(o), peer_p99.get(o)
                    if a is None or not b:
                        cells.append("—")
                    else:
                        cells.append(f"{a / b:.2f}×" + (" ✓" if a < b else ""))
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return out


def plot_curve(results: list[Result], path: Path) -> bool:
    """Draw p99 (solid) and p50 (dotted) latency against the offered rate, a line per server.

    Returns ``False`` without drawing if matplotlib is missing or no rate was measured.
    """
    figure = _new_plot()
    if figure is None:
        return False
    fig, ax = figure
    drawn = False
    for index, (name, server) in enumerate(SERVERS.items()):
        points = [
            (float(r["offered"]), p99, _latency(r, "p50") or p99)
            for r in _curve(results, name)
            if _ok(r) and (p99 := _latency(r, "p99")) is not None
        ]
        if not points:
            continue
        color = f"C{index}"
        xs = [p[0] for p in points]
        ax.plot(
            xs,
            [p[1] for p in points],
            marker="o",
            color=color,
            linewidth=2.6 if server.ours else 1.6,
            label=f"{server.title} p99",
        )
        ax.plot(xs, [p[2] for p in points], linestyle=":", color=color, linewidth=1.2)
        drawn = True
    if not drawn:
        _close_plot(fig)
        return False
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlabel("offered deliveries/s (events/s × streams), open loop")
    _save_plot(
        fig,
        ax,
        path,
        ylabel="latency, ms (log scale; solid p99, dotted p50)",
        title="Latency against offered rate, one core each side",
    )
    return True
