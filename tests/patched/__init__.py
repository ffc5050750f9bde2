"""Cases that run in a fresh interpreter rather than in pytest's: ``python -m patched
MODULE:CASE`` from tests/ monkey-patches with gevent first, as gunicorn's gevent worker does
(patching cannot be undone inside pytest's process), then runs the function ``CASE`` of
``patched.MODULE``; ``python -m patched.run MODULE:CASE`` runs one without patching.

Nothing here is imported by pytest's own process: the tests start these through
:func:`helpers.patched.run_case`, and the modules have no ``test_`` prefix, so pytest does not
collect them. This file imports nothing, so that the patching comes before any other import.
"""
