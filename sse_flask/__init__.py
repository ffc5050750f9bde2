"""Server-sent events for Flask: a blueprint, a broker, and a stream per client.

::

    from flask import Flask
    from sse_flask import SSE

    app = Flask(__name__)
    sse = SSE(app)
    sse.publish({"order": 7, "status": "shipped"}, event="order", channel="user:42")
"""

from __future__ import annotations

from .errors import (
    BrokerUnavailable,
    ConfigError,
    DataTooLarge,
    InvalidChannel,
    InvalidInput,
    InvalidToken,
    SSEError,
    UnknownJob,
)
from .events import Event, encode_comment, encode_event
from .extension import SSE
from .jobs import Job

__version__ = "0.1.0"

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "DataTooLarge",
    "Event",
    "InvalidChannel",
    "InvalidInput",
    "InvalidToken",
    "Job",
    "SSE",
    "SSEError",
    "UnknownJob",
    "encode_comment",
    "encode_event",
]
