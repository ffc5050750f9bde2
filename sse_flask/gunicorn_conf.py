"""gunicorn settings for an sse-flask app run with plain gunicorn, the same as
``sse-flask serve`` uses, for anyone who installed the package::

    gunicorn -c python:sse_flask.gunicorn_conf 'yourapp:create_app()' -b 127.0.0.1:8080

sse-flask's gevent workers (:class:`sse_flask.worker.GeventWorker`: publishes write to
waiting streams themselves) with room for up to 20,000 connections each; open streams closed as soon as
a worker is told to stop (SIGTERM, SIGHUP, or SIGINT), so that browsers reconnect to the new
workers at once; ``/metrics`` summed over the workers. The bind is left to the command line.
gunicorn reads every name here that is one of its settings.
"""

from __future__ import annotations

from .serving import GUNICORN_SETTINGS, HOOKS, prepare_metrics_dir

globals().update(GUNICORN_SETTINGS)
globals().update(HOOKS)
prepare_metrics_dir()
