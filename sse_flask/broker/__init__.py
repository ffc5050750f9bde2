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

    def subscribe(self, channels: t.Sequence[str], last_event_id: str | None, *, queue_size: int) -> Subscription:
        """Subscribe to ``channels``. With ``last_event_id``, the subscription's ``replay``
        holds every retained event after it on those channels (preceded by a ``missed``
        frame if that id is unknown or older than the history), and live delivery follows
        with no gap and no duplicate.

        :raises BrokerUnavailable: if the history cannot be read.
        """

    def stats(self) -> dict[str, t.Any]:
        """``consumers``, ``channels``, ``published``, ``dropped`` and ``backend``."""

    def ping(self) -> None:
        """Return if the broker is reachable.

        :raises BrokerUnavailable: with the reason, if it is not.
        """

    def close(self) -> None:
        """End every subscription and release connections."""


def make_broker(settings: Settings) -> Broker:
    """Return the broker that ``settings`` ask for."""
    if settings.broker_url is None:
        return MemoryBroker(history=settings.history)
    from .redis import RedisBroker

    return RedisBroker(
        settings.broker_url, history=settings.history, wait_replicas=settings.redis_wait_replicas
    )
