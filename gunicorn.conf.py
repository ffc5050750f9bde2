"""``gunicorn -c gunicorn.conf.py 'yourapp:create_app()' -b HOST:PORT``: the settings of
:mod:`sse_flask.gunicorn_conf` (``-c python:sse_flask.gunicorn_conf`` outside this repository)."""

from sse_flask.gunicorn_conf import *  # noqa: F403
