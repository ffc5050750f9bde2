"""gunicorn settings for tests/test_adapter.py: sse-flask's own, with each worker made to see,
before it boots, what an upgrade of gunicorn or gevent could bring (``ADAPTER_CHANGE``):

- ``versions``: other versions of both than ``sse_flask.worker.CHECKED_WITH`` names;
- ``start_response``: a ``start_response`` that is not a method of gunicorn's ``Response``;
- ``response``: a ``Response`` without one of the attributes the worker uses (as if gunicorn
  had renamed it: the worker is told to look for one that gunicorn's never had);
- ``pool``: gunicorn's gevent worker making its pools from another class than gevent's ``Pool``.

A hub without ``thread_ident`` cannot be made here: gevent's own waits need it.
"""

from __future__ import annotations

import functools
import os
import typing as t

import gevent
import gevent.pool
import gunicorn
from gunicorn.http import wsgi
from gunicorn.workers import ggevent

import sse_flask.worker
from sse_flask.gunicorn_conf import *  # noqa: F403


def post_fork(server: t.Any, worker: t.Any) -> None:
    change = os.environ.get("ADAPTER_CHANGE")
    if change == "versions":
        gunicorn.__version__ = "99.0.0"
        gevent.__version__ = "99.1.0"
    elif change == "start_response":
        create = wsgi.create

        def create_unbound(*args: t.Any, **kwargs: t.Any) -> t.Any:
            response, environ = create(*args, **kwargs)
            response.start_response = functools.partial(type(response).start_response, response)
            return response, environ

        wsgi.create = create_unbound
    elif change == "response":
        sse_flask.worker._RESPONSE_INTERNALS += ("bytes_sent",)
    elif change == "pool":
        ggevent.Pool = type("Pool", (gevent.pool.Pool,), {})
