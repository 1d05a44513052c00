"""Database fixtures: every test that takes ``db_url`` runs on SQLite and on PostgreSQL.

PostgreSQL is expected at 127.0.0.1:5432 (trust auth, database ``test``); override with
WATTSCHED_TEST_POSTGRES_URL. Its tests skip when no server answers, except under CI (``CI`` set), where a
missing PostgreSQL is a failure. Each test gets its own schema, dropped afterwards, so runs never collide.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, text

POSTGRES_URL = os.environ.get("WATTSCHED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # no server, no driver
        return str(exc).splitlines()[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """A URL to an empty database (not yet upgraded) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'wattsched.db'}"
        return
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {POSTGRES_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {problem}")
    schema = f"wattsched_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def daemon(db_url, tmp_path):
    """A daemon on an upgraded database, not started (no Ray): tests drive its store and serve its API with
    FastAPI's test client. Modules that need a running daemon define their own ``daemon`` fixture."""
    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon
    from scheduler.store.engine import upgrade

    daemon = Daemon(Settings(data_dir=tmp_path, database_url=db_url))
    upgrade(daemon.engine)
    yield daemon
    daemon.engine.dispose()
