"""Tests of the CI helpers in ``hack/``: its modules import as top-level ones, as ``make`` runs them (``hack`` is
on pytest's ``pythonpath``, as on the Makefile's ``PYTHONPATH``)."""

pytest_plugins = ["pytester"]
