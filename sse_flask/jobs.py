"""``sse.start_job(...)``: work that runs apart from the request, streamed to a channel of
its own, so that a client that drops resumes the same answer where it left off.

The function runs in a :class:`~sse_flask.tasks.Task` (a greenlet under gevent, a thread
otherwise) inside an app context of its own, whose teardown runs when the job ends. Each
item it yields is published to the job's private channel ``job:<unguessable>``, and the
job ends with ``done`` (``{"items": N}``), ``error`` (``{"error": "..."}``, the traceback
goes to the log) or ``cancelled`` (``{"items": N}``). The broker keeps a job's events apart
from the history (``SSE_HISTORY`` trims other channels' events, never a job's) until
``SSE_JOB_RETENTION`` seconds after its last, so ``/events?channel=job:...`` always starts
at the job's first event, or after ``Last-Event-ID``, and ends after its last.

A job survives its client, not its worker: with the Redis broker any worker serves and
resumes its stream, and cancels it, but it runs in the worker that started it.

Deliberate choices:

- A job's channel is streamed on its own (no other channel beside it on one stream), and
  only the job publishes to it.
- Its channel needs a subscribe token that grants it (:attr:`Job.token`) whatever the
  authorizer says: knowing a job's name is not enough to read it.
"""

from __future__ import annotations

import collections.abc
import secrets
import typing as t

from .errors import InvalidInput, UnknownJob
from .events import Event, encode_event
from .tasks import ERROR, Task

if t.TYPE_CHECKING:
    from flask import Flask

    from .broker import Broker, Subscription

__all__ = [
    "FAILED_MESSAGE",
    "JOB_PREFIX",
    "TOKEN_SECONDS",
    "Job",
    "is_job",
    "start_job",
    "subscribe",
]

#: Every job's channel starts with it.
JOB_PREFIX = "job:"
#: Seconds a job's subscribe token lasts: longer than any answer takes to stream.
TOKEN_SECONDS = 86400
#: What a client is told when the job raises: the details go to the log only.
FAILED_MESSAGE = "the job failed on the server; the details are in the server's log"


class Job:
    """A job started by :meth:`SSE.start_job <sse_flask.SSE.start_job>`.

    :attr channel: its private channel, ``job:<unguessable id>``.
    :attr token: a subscribe token for that channel: open
        ``/events?channel=<channel>&token=<token>``.
    """

    def __init__(self, channel: str, token: str, task: Task) -> None:
        self.channel = channel
        self.token = token
        self._task = task

    def cancel(self) -> None:
        """Close the function's generator (``GeneratorExit`` in it): at once under gevent,
        else when its current step returns; the job then ends with ``cancelled``."""
        self._task.cancel()

    def __repr__(self) -> str:
        return f"<Job {self.channel}>"


def is_job(channel: str) -> bool:
    """Whether ``channel`` is a job's."""
    return channel.startswith(JOB_PREFIX)


def start_job(
    function: t.Callable[..., t.Any],
    args: tuple[t.Any, ...],
    kwargs: dict[str, t.Any],
    *,
    app: Flask,
    broker: Broker,
    frame: t.Callable[[t.Any, str | None], bytes],
    token: t.Callable[[str], str],
) -> Job:
    """Start ``function(*args, **kwargs)`` apart from the caller; return its :class:`Job`.

    :param frame: encodes an item's data and event type, checked as a publish is.
    :param token: signs a subscribe token for a channel.
    """
    channel = JOB_PREFIX + secrets.token_urlsafe(18)

    def emit(item: t.Any) -> bool:
        data, event = (item.data, item.event) if isinstance(item, Event) else (item, None)
        broker.publish_job(channel, frame(data, event))
        return True

    def finish(outcome: str, count: int) -> None:
        data = {"error": FAILED_MESSAGE} if outcome == ERROR else {"items": count}
        broker.publish_job(channel, encode_event(Event(data=data, event=outcome)), last=True)

    task = Task(
        lambda: _items(function(*args, **kwargs)),
        emit=emit,
        finish=finish,
        context=app.app_context,
        name=f"job {getattr(function, '__qualname__', function)!s:.80} ({channel})",
    )
    job = Job(channel, token(channel), task)
    broker.open_job(channel, task.cancel)
    task.start()
    return job


def subscribe(
    broker: Broker, channels: list[str], last_event_id: str | None, *, queue_size: int
) -> Subscription:
    """Subscribe a stream to ``channels``: a job's from its first event (or after
    ``last_event_id``) until its last, any others as the broker does.

    :raises InvalidInput: if a job's channel is asked for beside another channel.
    :raises UnknownJob: if the broker keeps no such job.
    """
    jobs = [channel for channel in channels if is_job(channel)]
    if not jobs:
        return broker.subscribe(channels, last_event_id, queue_size=queue_size)
    if len(channels) > 1:
        raise InvalidInput(
            f"a job's channel is streamed on its own: ask for {jobs[0]!r} without other channels"
        )
    subscription = broker.subscribe_job(jobs[0], last_event_id, queue_size=queue_size)
    if subscription is None:
        raise UnknownJob(
            f"no job {jobs[0]!r} here: it ended more than SSE_JOB_RETENTION seconds ago, "
            "or ran on a worker that has stopped"
        )
    return subscription


def _items(result: t.Any) -> t.Iterable[t.Any]:
    """What a job publishes: each item of an iterator (a generator), else the one value
    returned (nothing for ``None``)."""
    if isinstance(result, collections.abc.Iterator):
        return result
    return [] if result is None else [result]
