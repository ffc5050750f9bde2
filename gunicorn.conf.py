"""gunicorn settings for an sse-flask app run with plain gunicorn, the same as
``sse-flask serve`` uses::

    gunicorn -c gunicorn.conf.py 'yourapp:create_app()'

sse-flask's gevent workers (sse_flask.worker.GeventWorker: publishes write to waiting
streams themselves) with room for 10,000 streams each, and open streams closed as soon as a
stopping or recycling worker stops accepting, so that browsers reconnect to the new workers
at once; /metrics summed over the workers.
"""

from sse_flask.serving import GUNICORN_SETTINGS, child_exit, post_worker_init, prepare_metrics_dir, worker_exit  # noqa: F401 (hooks)

globals().update(GUNICORN_SETTINGS)
prepare_metrics_dir()
bind = "127.0.0.1:8080"
