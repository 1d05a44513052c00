"""Database fixtures: every test that takes ``db_url`` (or ``daemon``) runs on SQLite and on PostgreSQL.

PostgreSQL is expected at 127.0.0.1:5432 (trust auth, database ``test``); override with
WATTSCHED_TEST_POSTGRES_URL. Its tests skip when no server answers, except under CI (``CI`` set), where a
missing PostgreSQL is a failure. Runs never collide: every schema a run makes has a random name and is dropped.

``db_url`` is an empty database (not yet upgraded), a schema of its own per test. ``upgraded_db_url`` is an
empty database at the schema's head, as a fresh upgrade leaves it, made cheaply: migrating a database costs a
tenth of a second on SQLite and more on PostgreSQL, paid hundreds of times in a run. The migrations run once per
run and backend: a test gets a copy of that SQLite file, or the one upgraded PostgreSQL schema of the run,
emptied (rows deleted, sequences restarted) after each test.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import Engine

POSTGRES_URL = os.environ.get("WATTSCHED_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@functools.cache  # asked by every PostgreSQL test: once per run is enough
def _postgres_reachable() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # no server, no driver
        return str(exc).splitlines()[0]


def _require_postgres() -> None:
    """Skip the test when PostgreSQL does not answer (fail under CI)."""
    problem = _postgres_reachable()
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable at {POSTGRES_URL}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {problem}")


def _schema_url(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


def _create_schema(admin: Engine) -> str:
    schema = f"wattsched_test_{uuid.uuid4().hex[:10]}"
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    return schema


def _drop_schema(admin: Engine, schema: str) -> None:
    with admin.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request) -> str:
    """The database backend of the test: ``sqlite`` or ``postgresql``."""
    if request.param == "postgresql":
        _require_postgres()
    return request.param


@pytest.fixture
def db_url(backend, tmp_path):
    """A URL to an empty database (not yet upgraded) on each backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'wattsched.db'}"
        return
    admin = create_engine(POSTGRES_URL)
    schema = _create_schema(admin)
    yield _schema_url(schema)
    _drop_schema(admin, schema)
    admin.dispose()


class UpgradedDatabases:
    """The run's upgraded databases, made on first use: a SQLite file to copy, and a PostgreSQL schema to empty."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._sqlite: Path | None = None
        self._admin: Engine | None = None
        self._schema: str | None = None
        self._version: str | None = None
        self._tables: list[str] = []  # children before parents, so rows can be deleted in this order
        self._sequences: list[str] = []

    def sqlite_copy(self, path: Path) -> str:
        """A URL to a copy of the upgraded SQLite database at ``path``."""
        from scheduler.store.engine import make_engine, upgrade

        if self._sqlite is None:
            template = self.folder / "upgraded.db"
            engine = make_engine(f"sqlite:///{template}")
            upgrade(engine)
            engine.dispose()
            self._sqlite = template
        # The backup API copies a consistent database whatever its journal mode (WAL here).
        source, target = sqlite3.connect(self._sqlite), sqlite3.connect(path)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return f"sqlite:///{path}"

    def postgres_schema(self) -> str:
        """A URL to the run's upgraded PostgreSQL schema, empty."""
        if self._schema is None:
            self._admin = create_engine(POSTGRES_URL)
            self._schema = _create_schema(self._admin)
            self._upgrade()
        return _schema_url(self._schema)

    def _upgrade(self) -> None:
        from scheduler.store.engine import make_engine, upgrade

        engine = make_engine(_schema_url(self._schema))
        try:
            upgrade(engine)
            metadata = MetaData()
            metadata.reflect(engine)
            self._tables = [t.name for t in reversed(metadata.sorted_tables) if t.name != "alembic_version"]
            with engine.connect() as connection:
                self._version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
                self._sequences = list(connection.execute(
                    text("SELECT sequence_name FROM information_schema.sequences WHERE sequence_schema = :schema"),
                    {"schema": self._schema}).scalars())
        finally:
            engine.dispose()

    def empty_postgres_schema(self) -> None:
        """Make the schema what a fresh upgrade leaves: no rows, sequences from the start; rebuilt if a test
        changed its revision."""
        qualified = [f'"{self._schema}"."{name}"' for name in self._tables]
        with self._admin.begin() as connection:
            # A connection a test leaked would block this for ever: fail instead.
            connection.execute(text("SET LOCAL lock_timeout = '60s'"))
            version = connection.execute(text(f'SELECT version_num FROM "{self._schema}".alembic_version')).scalar()
            if version == self._version:
                for table in qualified:
                    connection.execute(text(f"DELETE FROM {table}"))
                for sequence in self._sequences:
                    connection.execute(text(f'ALTER SEQUENCE "{self._schema}"."{sequence}" RESTART'))
                return
        _drop_schema(self._admin, self._schema)
        self._schema = _create_schema(self._admin)
        self._upgrade()

    def close(self) -> None:
        if self._schema is not None:
            _drop_schema(self._admin, self._schema)
            self._admin.dispose()


@pytest.fixture(scope="session")
def upgraded_databases(tmp_path_factory):
    databases = UpgradedDatabases(tmp_path_factory.mktemp("upgraded"))
    yield databases
    databases.close()


@pytest.fixture
def upgraded_db_url(backend, tmp_path, upgraded_databases):
    """A URL to an empty database at the schema's head on each backend (as ``upgrade`` leaves a fresh one)."""
    if backend == "sqlite":
        yield upgraded_databases.sqlite_copy(tmp_path / "wattsched.db")
        return
    yield upgraded_databases.postgres_schema()
    upgraded_databases.empty_postgres_schema()


@pytest.fixture
def daemon(upgraded_db_url, tmp_path):
    """A daemon on an upgraded database, not started (no Ray): tests drive its store and serve its API with
    FastAPI's test client. Modules that need a running daemon define their own ``daemon`` fixture."""
    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon
    from scheduler.store.engine import upgrade

    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url))
    upgrade(daemon.engine)  # at head already: a no-op that says so
    yield daemon
    daemon.engine.dispose()
