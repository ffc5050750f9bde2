"""The exceptions sse_flask raises.

::

    SSEError
    ├── ConfigError            (also ValueError) a bad SSE_* setting, at start-up
    ├── InvalidInput           (also ValueError) bad input to publish or subscribe: HTTP 400
    │   ├── InvalidChannel     a channel name outside A-Z a-z 0-9 _ . : @ -, 1 to 128 long
    │   └── DataTooLarge       data over SSE_MAX_DATA_BYTES: HTTP 413
    ├── InvalidToken           a subscribe token forged, malformed or expired: HTTP 403
    ├── UnknownJob             a job's channel that the broker does not keep: HTTP 404
    └── BrokerUnavailable      the broker (Redis) cannot be reached: HTTP 503
        └── NotReplicated      written, but fewer replicas confirmed it than SSE_REDIS_WAIT_REPLICAS

Event types and ids with CR, LF or NUL raise a plain :class:`ValueError` from
:mod:`sse_flask.events`, which has no dependency on this module.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "DataTooLarge",
    "InvalidChannel",
    "InvalidInput",
    "InvalidToken",
    "NotReplicated",
    "SSEError",
    "UnknownJob",
]


class SSEError(Exception):
    """Base class of every exception sse_flask raises on purpose."""


class ConfigError(SSEError, ValueError):
    """An ``SSE_*`` setting has a value that is not allowed."""


class InvalidInput(SSEError, ValueError):
    """Input to publish or subscribe is not acceptable; the message says why."""


class InvalidChannel(InvalidInput):
    """A channel name is empty, too long, or has a character that is not allowed."""


class DataTooLarge(InvalidInput):
    """The encoded data is larger than ``SSE_MAX_DATA_BYTES``."""


class InvalidToken(SSEError):
    """A subscribe token is forged, malformed or expired."""


class UnknownJob(SSEError):
    """No job of that channel is kept: it ended over ``SSE_JOB_RETENTION`` seconds ago,
    or ran on a worker that has stopped (with the in-process broker)."""


class BrokerUnavailable(SSEError):
    """The broker cannot be reached, so nothing was published or replayed."""


class NotReplicated(BrokerUnavailable):
    """Redis took the event but fewer replicas than ``SSE_REDIS_WAIT_REPLICAS`` confirmed it
    in time: it may have been delivered, and may be lost if the primary fails over.

    :param event_id: the id Redis gave the event; publishing it again may deliver it twice.
    """

    def __init__(self, event_id: str, where: str, replicas: int, wanted: int, wait_ms: int) -> None:
        super().__init__(
            f"event {event_id} was written to {where}, but only {replicas} of {wanted} replicas"
            f" (SSE_REDIS_WAIT_REPLICAS) confirmed it within {wait_ms} ms: it may have been"
            " delivered, and may be lost if Redis fails over"
        )
        self.event_id = event_id
