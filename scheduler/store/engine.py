"""Engines, sessions and schema upgrades for SQLite (the embedded default) and PostgreSQL.

Every wait on the database is bounded (``DatabaseTimeouts``): a database that refuses connections, stays locked
or stops answering makes the engine raise ``DatabaseUnavailable`` within seconds, in place of the driver's error,
so the API can answer 503 and the daemon can keep what it has not recorded and try again.
"""

from __future__ import annotations

import math
import os
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from scheduler.config import Settings
from scheduler.errors import DatabaseError, DatabaseUnavailable
from scheduler.store.watchdog import SocketWatchdog
from workers.file_modes import PRIVATE_FILE_MODE, make_private_dir, make_private_file

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"
#: Seconds a connection may stay silent past the server's statement timeout before the watchdog closes it.
STATEMENT_SLACK_S = 1.0
#: What SQLite says when it is locked or its file cannot be used for now (other errors are bugs, not outages).
SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o error")
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

_watchdog = SocketWatchdog()  # one thread for every engine's connections: it holds no state between waits


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long the engine waits on the database before raising ``DatabaseUnavailable``. Units: s.

    connect_s: a new PostgreSQL connection; half of it for the check of a pooled one before use, so that a dead
    pool and a failed reconnection together take at most one and a half times it. statement_s: one PostgreSQL
    statement (0: none, for schema upgrades). pool_s: a free connection of the pool. busy_s: another
    SQLite writer's lock. The defaults are the daemon's (scheduler.config.Settings).
    """

    connect_s: float = Settings.db_connect_timeout_s
    statement_s: float = Settings.db_statement_timeout_s
    pool_s: float = Settings.db_pool_timeout_s
    busy_s: float = Settings.db_busy_timeout_s

    @classmethod
    def of(cls, settings: Settings) -> DatabaseTimeouts:
        return cls(settings.db_connect_timeout_s, settings.db_statement_timeout_s, settings.db_pool_timeout_s,
                   settings.db_busy_timeout_s)


class _BoundedPool(QueuePool):
    """The default pool, whose timeout waiting for a free connection is an outage like any other."""

    def connect(self):
        try:
            return super().connect()
        except sa_exc.TimeoutError as exc:
            raise DatabaseUnavailable(f"no free database connection within {self.timeout():g} s: "
                                      "the database is slow or overloaded") from exc


def make_engine(url: str, timeouts: DatabaseTimeouts = DatabaseTimeouts()) -> Engine:
    """An engine for ``url`` whose waits are bounded by ``timeouts``; SQLite gets WAL and enforced foreign keys."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed, timeouts)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// would pick psycopg2; we ship psycopg 3.
        parsed = parsed.set(drivername="postgresql+psycopg")
    connect_args = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args = _postgres_connect_args(parsed.query, timeouts)
    try:
        engine = create_engine(parsed, poolclass=_BoundedPool, pool_timeout=timeouts.pool_s,
                               connect_args=connect_args)
    except Exception as exc:  # unknown dialect, missing driver
        raise DatabaseError(
            f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {exc}; "
            "install wattsched[postgres] for PostgreSQL"
        ) from exc
    _translate_outages(engine)
    if engine.dialect.name == "postgresql":
        _bound_waits(engine, timeouts)
    return engine


def _sqlite_engine(url: str, parsed, timeouts: DatabaseTimeouts) -> Engine:
    in_memory = not parsed.database or parsed.database == ":memory:"
    if not in_memory:
        _make_private(Path(parsed.database))
    # The API threads and the event thread share the file: a writer waits for another's lock, up to busy_s.
    pool = {} if in_memory else {"poolclass": _BoundedPool, "pool_timeout": timeouts.pool_s}
    engine = create_engine(url, connect_args={"timeout": timeouts.busy_s, "check_same_thread": False}, **pool)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    _translate_outages(engine)
    return engine


def _make_private(database: Path) -> None:
    """The database file 0600 (and its folder 0700 if made here): it holds every user's jobs and token hashes.

    SQLite gives its -wal and -shm files the database file's mode; side files left by an older, world-readable
    database are made private too.
    """
    if not database.parent.exists():
        make_private_dir(database.parent)
    if database.exists() and database.stat().st_uid != os.getuid():
        return  # another user's database, opened to be read: not ours to change
    make_private_file(database)
    for suffix in SQLITE_SIDE_FILES:
        side = database.with_name(database.name + suffix)
        if side.exists():
            os.chmod(side, PRIVATE_FILE_MODE)


def _postgres_connect_args(query, timeouts: DatabaseTimeouts) -> dict:
    """psycopg's connect timeout and the server's statement timeout, added to what the URL says."""
    args: dict = {}
    if "connect_timeout" not in query:
        args["connect_timeout"] = max(2, math.ceil(timeouts.connect_s))  # libpq takes whole seconds, at least 2
    if timeouts.statement_s > 0:
        options = query.get("options") or ""
        if isinstance(options, tuple):
            options = " ".join(options)
        # The URL's own options (a search_path, say) would be replaced by ours: keep them.
        args["options"] = f"{options} -c statement_timeout={round(timeouts.statement_s * 1000)}".strip()
    return args


def is_outage(exc: BaseException, connection_lost: bool = False) -> bool:
    """Whether a driver error says the database is away, slow or locked for now (not a bad statement)."""
    orig = getattr(exc, "orig", exc)
    if connection_lost or isinstance(exc, sa_exc.TimeoutError):
        return True
    if isinstance(orig, sqlite3.OperationalError):
        return any(word in str(orig).lower() for word in SQLITE_TRANSIENT)
    try:
        import psycopg
    except ImportError:  # SQLite only
        return False
    # Connection refused or lost, statement timeout (QueryCanceled), server shutting down, out of resources.
    return isinstance(orig, (psycopg.OperationalError, psycopg.InterfaceError))


def _translate_outages(engine: Engine) -> None:
    """Raise ``DatabaseUnavailable`` in place of a driver error that says the database is away (the engine still
    invalidates the connections first, as for any disconnection)."""

    @event.listens_for(engine, "handle_error")
    def _unavailable(context):
        if isinstance(context.original_exception, DatabaseUnavailable):
            return None
        if not is_outage(context.original_exception, context.is_disconnect):
            return None
        said = str(context.original_exception).strip() or type(context.original_exception).__name__
        return DatabaseUnavailable(f"the database is unavailable: {said.splitlines()[0][:300]}")


def _bound_waits(engine: Engine, timeouts: DatabaseTimeouts) -> None:
    """Give every wait on a PostgreSQL connection a deadline the watchdog enforces: the check of a pooled
    connection before use (half of connect_s), each statement, commit and rollback (statement_s and a little slack).

    The check replaces ``pool_pre_ping``, whose wait nothing bounds.
    """
    statement_deadline_s = (timeouts.statement_s + STATEMENT_SLACK_S) if timeouts.statement_s > 0 else None
    key = "wattsched.deadline"

    def arm(info: dict, dbapi_connection, seconds: float | None) -> None:
        _watchdog.disarm(info.pop(key, None))
        if seconds is not None:
            info[key] = _watchdog.arm(dbapi_connection.fileno(), seconds)

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_connection, record):
        record.info["wattsched.fresh"] = True  # just opened: it answered, no need to check it

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection, record, _proxy):
        if record.info.pop("wattsched.fresh", False):
            return
        arm(record.info, dbapi_connection, timeouts.connect_s / 2)
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # Every pooled connection may be as dead as this one: the pool replaces them all.
            raise sa_exc.InvalidatePoolError(f"a pooled connection did not answer: {exc}") from exc
        finally:
            _watchdog.disarm(record.info.pop(key, None))

    def arm_statement(conn) -> None:
        if not conn.invalidated:  # an invalidated connection has no socket left to watch
            arm(conn.info, conn.connection.dbapi_connection, statement_deadline_s)

    def disarm_record(_dbapi_connection, record, *_args) -> None:
        _watchdog.disarm(record.info.pop(key, None))

    # Disarmed before the pool closes a connection: its descriptor may then be reused by another socket.
    for name in ("checkin", "invalidate", "soft_invalidate", "close"):
        event.listen(engine, name, disarm_record)

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn, _cursor, _statement, _parameters, _context, _executemany):
        arm_statement(conn)

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn, _cursor, _statement, _parameters, _context, _executemany):
        _watchdog.disarm(conn.info.pop(key, None))

    # Commit and rollback have no "after" event: their deadline ends at the next statement or at the
    # connection's return to the pool, which a Session does right after either.
    event.listen(engine, "commit", arm_statement)
    event.listen(engine, "rollback", arm_statement)

    @event.listens_for(engine, "handle_error")
    def _failed(context):
        if context.connection is not None and not context.connection.invalidated:
            _watchdog.disarm(context.connection.info.pop(key, None))


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (the daemon does this at start; ``wattsched db upgrade`` on demand).

    On PostgreSQL the migrations run on an engine of their own without a statement timeout: rewriting a large
    table may take longer than any request should.
    """
    from alembic import command

    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    migrating = engine
    if engine.dialect.name == "postgresql":
        migrating = make_engine(engine.url.render_as_string(hide_password=False),
                                replace(DatabaseTimeouts(), statement_s=0))
    try:
        command.upgrade(alembic_config(migrating), revision)
    except Exception as exc:
        if isinstance(exc, DatabaseError):
            raise
        raise DatabaseError(
            f"could not upgrade the database at {engine.url.render_as_string(hide_password=True)}: {exc}"
        ) from exc
    finally:
        if migrating is not engine:
            migrating.dispose()
