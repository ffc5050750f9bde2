"""Brokers: where ids and history come from, and how a publish reaches every stream.

The blueprint only knows the :class:`Broker` protocol; :func:`make_broker` picks the
in-process broker, or Redis when ``SSE_BROKER_URL`` is set.
"""

from __future__ import annotations

import typing as t

from .fanout import Subscription
from .memory import MemoryBroker

if t.TYPE_CHECKING:
    from ..config import Settings

__all__ = ["Broker", "MemoryBroker", "Subscription", "make_broker"]


class Broker(t.Protocol):
    """What the extension and the blueprint need of a broker."""

    #: ``"memory"`` or ``"redis"``, as ``/stats`` reports it.
    name: str

    def publish(self, channel: str, frame: bytes) -> str:
        """Assign the next id to ``frame`` (an event encoded without an id), deliver it to
        every subscriber of ``channel`` and retain it for replay; return the id.

        :raises BrokerUnavailable: if nothing could be published.
        """

    def subscribe(
        self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int
    ) -> Subscription:
        """Subscribe to ``channels``. With ``last_event_id``, the subscription's ``replay``
        holds every retained event after it on those channels (preceded by a ``missed``
        frame if that id is unknown or older than the history), and live delivery follows
        with no gap and no duplicate.

        :raises BrokerUnavailable: if the history cannot be read.
        """

    def open_job(self, channel: str, on_cancel: t.Callable[[], None]) -> None:
        """Start keeping the events of the job ``channel`` apart from the history, until
        ``SSE_JOB_RETENTION`` seconds after its last; a :meth:`cancel_job` from any process
        that shares this broker calls ``on_cancel`` in this one.

        :raises BrokerUnavailable: if the broker cannot be reached.
        """

    def publish_job(self, channel: str, frame: bytes, *, last: bool = False) -> str:
        """As :meth:`publish`, on a job's channel, keeping the event with the job's; after
        the ``last`` one, every stream of the job ends.

        :raises BrokerUnavailable: if nothing could be published.
        """

    def subscribe_job(
        self, channel: str, last_event_id: str | None, *, queue_size: int
    ) -> Subscription | None:
        """Subscribe to the job ``channel``: its ``replay`` holds every event of the job, or
        those after ``last_event_id`` (all of them after a ``missed`` frame if the id is not
        this broker's), then live delivery follows with no gap and no duplicate; once the
        job has ended, the subscription ends after the replay. ``None`` if no such job is
        kept.

        :raises BrokerUnavailable: if the job's events cannot be read.
        """

    def cancel_job(self, channel: str) -> None:
        """Ask the process running the job ``channel`` to cancel it; nothing if it has ended.

        :raises BrokerUnavailable: if the request could not be sent.
        """

    def stats(self) -> dict[str, t.Any]:
        """``consumers``, ``channels``, ``published``, ``dropped`` and ``backend``."""

    def ping(self) -> None:
        """Return if the broker is reachable.

        :raises BrokerUnavailable: with the reason, if it is not.
        """

    def stop_publishing(self) -> None:
        """Refuse publishes that this process's end would lose (the worker is stopping;
        its streams stay open until :meth:`close`)."""

    def close(self) -> None:
        """End every subscription and release connections."""


def make_broker(settings: Settings) -> Broker:
    """Return the broker that ``settings`` ask for."""
    if settings.broker_url is None:
        return MemoryBroker(history=settings.history, job_retention=settings.job_retention)
    from .redis import RedisBroker

    return RedisBroker(
        settings.broker_url,
        history=settings.history,
        job_retention=settings.job_retention,
        wait_replicas=settings.redis_wait_replicas,
    )
