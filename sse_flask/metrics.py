"""Prometheus metrics, for ``/metrics``, summed over every gunicorn worker.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``sse-flask serve`` sets it for its workers), each
process writes its figures to files there and ``/metrics`` adds them up: prometheus_client's
multiprocess mode. Without it, the figures are this process's.

prometheus_client is imported on first use rather than with sse_flask, because it chooses
where values live when it is imported, from the environment of that moment.
"""

from __future__ import annotations

import os
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

__all__ = ["exposition", "metrics", "sent"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The metrics sse_flask keeps; one set per process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.streams_open: Gauge = Gauge(
            "sse_streams_open", "Event streams open now.", multiprocess_mode="livesum"
        )
        self.published: Counter = Counter(
            "sse_events_published", "Events published from this server."
        )
        self.frames_sent: Counter = Counter(
            "sse_frames_sent", "Events written to streams, replays included."
        )
        self.bytes_sent: Counter = Counter("sse_bytes_sent", "Bytes written to streams.")
        self.dropped: Counter = Counter(
            "sse_slow_consumers_dropped",
            "Streams cut off for falling SSE_QUEUE_SIZE events behind.",
        )
        self.replays: Counter = Counter("sse_replays", "Streams resumed after a Last-Event-ID.")
        self.missed: Counter = Counter(
            "sse_missed_sent", "'missed' events sent: resumes whose id was unknown or too old."
        )
        self.publish_seconds: Histogram = Histogram(
            "sse_publish_latency_seconds",
            "Time for the broker to accept a publish.",
            buckets=_LATENCY_BUCKETS,
        )
        self.fanout_seconds: Histogram = Histogram(
            "sse_fanout_duration_seconds",
            "Time to queue one event for every local stream of its channel.",
            buckets=_LATENCY_BUCKETS,
        )


class SentCounts:
    """Frames and bytes written to streams, added to their counters about once a second.

    In multiprocess mode a counter update is a write to a shared file: done for each
    write of each stream, it took a tenth of a worker's time fanning out to 10,000 streams.
    Counts wait for the next write after the second is up, or for :func:`exposition`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames = 0
        self._bytes = 0
        self._due = 0.0

    def add(self, frames: int, sent: int) -> None:
        with self._lock:
            self._frames += frames
            self._bytes += sent
        if time.monotonic() >= self._due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            frames, sent = self._frames, self._bytes
            self._frames = self._bytes = 0
            self._due = time.monotonic() + 1.0
        figures = metrics()
        figures.frames_sent.inc(frames)
        figures.bytes_sent.inc(sent)


#: This process's count of what its streams wrote.
sent = SentCounts()

_created: list[Metrics] = []
_creating = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, created on first use (once, though threads race to it:
    prometheus_client refuses a metric registered twice)."""
    if not _created:
        with _creating:
            if not _created:
                _created.append(Metrics())
    return _created[0]


def exposition() -> tuple[bytes, str]:
    """The text exposition of every worker's metrics, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    sent.flush()
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
