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
