"""Shared fixtures and the test lanes. Database fixtures live in db_fixtures.py (SQLite and PostgreSQL for every
DB test).

Lanes: ``pytest -m "not slow"`` is the quick one (no Ray, no real diffusion model trained or sampled, no API
fuzzing); the whole suite is ``pytest``. A test that starts Ray is marked ``ray`` and counts as slow without saying so: each Ray
start-up costs seconds, more on a busy machine.
"""

import pytest

from db_fixtures import backend, daemon, db_url, upgraded_databases, upgraded_db_url  # noqa: F401  (fixtures)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)


_EXIT_STATUS = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """End the test process at once, with the session's status, once pytest has reported everything.

    Why: the interpreter's own teardown after a whole run (Ray's, torch's and numba's native threads and atexit
    hooks, in one process that ran them all) crashed once with SIGSEGV on a clean checkout after every test had
    passed, which fails `make test` for nothing the tests check. Skipping that teardown is safe: every fixture
    has already stopped what it started.
    """
    if "status" in _EXIT_STATUS:
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])
