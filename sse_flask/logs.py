"""Keep subscribe tokens out of logs.

A page passes its subscribe token in the stream's URL, ``/events?token=...``, because
EventSource cannot set headers; so every log line that holds a request's URL (an access
log above all) would hand the token to whoever reads the log, for as long as it lasts.

- :func:`redact` takes the tokens out of one line of text;
- :class:`RedactTokens` is a :class:`logging.Filter` that does it to every record of the
  logger it is added to (gunicorn's ``gunicorn.access``, werkzeug's ``werkzeug``);
- :class:`GunicornLogger` is gunicorn's own logger class with that filter on its access and
  error logs: ``gunicorn --access-logfile - --logger-class sse_flask.logs.GunicornLogger``.

Only imported where it is used: importing it imports gunicorn.
"""

from __future__ import annotations

import logging
import re
import typing as t

from gunicorn.glogging import Logger

__all__ = ["GunicornLogger", "RedactTokens", "redact"]

#: The value of a ``token`` query parameter, up to the next parameter, space or quote.
_TOKEN = re.compile(r"([?&]token=)[^&#\s\"']*")


def redact(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced by ``[redacted]``.

    ::

        >>> redact("GET /events?channel=user:1&token=eyJj.abc HTTP/1.1")
        'GET /events?channel=user:1&token=[redacted] HTTP/1.1'
    """
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """A filter that redacts subscribe tokens from each record's message.

    The record is formatted first, so a token is caught whatever argument or format
    field (a request line, a path, a query string, a referrer) carries it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with subscribe tokens redacted from its access and error logs
    (the error log names a request's URL when the request fails)."""

    def setup(self, cfg: t.Any) -> None:
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            # setup runs again on each reload; one filter is enough.
            if not any(isinstance(existing, RedactTokens) for existing in log.filters):
                log.addFilter(RedactTokens())
