"""The parts of ``benchmarks/churn.py``: :mod:`.launch` (server, Redis, memory sampler),
:mod:`.publisher`, :mod:`.crowd` (the clients), :mod:`.ledger` (what was lost), :mod:`.faults`
(one broker's run through its faults) and :mod:`.soak` (idle memory)."""
