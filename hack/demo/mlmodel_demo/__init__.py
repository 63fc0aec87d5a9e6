"""``make demo``'s steps, importable by its scripts (``hack/demo/demo.py``, ``demo_cluster.py``) and its e2e test.

``steps`` and ``report`` use the standard library only: ``demo.py`` imports them with the system's python3,
before the virtualenv exists. ``canary`` is the live part on a cluster, in the virtualenv.
"""
