"""``python -m sse_flask`` runs the ``sse-flask`` command."""

from .cli import main

main(prog_name="sse-flask")
