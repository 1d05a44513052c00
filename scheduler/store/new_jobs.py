"""New jobs' rows, written many at a time: the database half of a submission.

A batch of new jobs (``scheduler.store.group_commit`` gathers them) goes in with its first events in one
transaction, and a repeated idempotency key is left to the database: ``INSERT ... ON CONFLICT (user_id,
idempotency_key) DO NOTHING`` inserts the rows whose key is new and says which, so no look-up comes first.

On PostgreSQL it is one statement (the jobs' insert feeds the events' insert in a ``WITH``), run outside an
explicit transaction: one round trip for the whole batch, atomic as any statement. SQLite cannot put an insert
in a ``WITH``, so there it is two statements in one transaction (in the daemon's process: no round trips).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Dialect, Engine, insert
from sqlalchemy.dialects import sqlite

from scheduler.errors import DatabaseUnavailable
from scheduler.store.job_state import JobState
from scheduler.store.models import Job, JobEvent

JOBS = Job.__table__
EVENTS = JobEvent.__table__
SUBMITTED = "submitted"
SUBMITTED_HELD = "submitted, held by the user"


@dataclass(frozen=True)
class NewJob:
    """A validated job's row (``values``: the jobs table's columns) for one batch insert."""

    values: dict[str, Any]

    @property
    def event(self) -> dict[str, Any]:
        """Its first event: submitted, at its submission time."""
        return dict(job_id=self.values["id"], at=self.values["submitted_at"], from_state=None,
                    to_state=JobState.PENDING.value, reason=SUBMITTED_HELD if self.values["held"] else SUBMITTED)


def insert_new_jobs(engine: Engine, batch: Sequence[NewJob]) -> list[bool | BaseException]:
    """Insert the batch's jobs and first events; for each, True (inserted), False (its user's idempotency key
    was taken: nothing written for it) or the error the database gave it.

    The batch is written as a whole when it can be. If the database refuses it for a reason that is not an
    outage (a value out of range, a constraint), each job is written alone, so that one bad submission fails
    alone; an outage fails them all (``DatabaseUnavailable``, raised).
    """
    try:
        inserted = _insert(engine, batch)
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
        return [_alone(engine, one) for one in batch]
    return [one.values["id"] in inserted for one in batch]


def _alone(engine: Engine, one: NewJob) -> bool | BaseException:
    try:
        return one.values["id"] in _insert(engine, [one])
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        return exc


def _insert(engine: Engine, batch: Sequence[NewJob]) -> set[str]:
    """The ids of the jobs inserted (those whose key was free)."""
    if engine.dialect.name == "postgresql":
        return _insert_postgres(engine, batch)
    with engine.begin() as connection:
        inserted = set(connection.scalars(_SQLITE_JOBS, [one.values for one in batch]))
        if inserted:
            connection.execute(_EVENTS, [one.event for one in batch if one.values["id"] in inserted])
    return inserted


# SQLite: built once (the rows are executemany parameters, sent as one multi-row INSERT), so that SQLAlchemy
# compiles each once and not each batch.
_SQLITE_JOBS = (sqlite.insert(JOBS).on_conflict_do_nothing(index_elements=[JOBS.c.user_id, JOBS.c.idempotency_key])
                .returning(JOBS.c.id))
_EVENTS = insert(EVENTS)


def _insert_postgres(engine: Engine, batch: Sequence[NewJob]) -> set[str]:
    """One statement whatever the batch's size: each column's values as one array, turned back into rows by
    ``unnest``; its text is the same every time, so the server prepares it once and SQLAlchemy compiles nothing."""
    columns = tuple(batch[0].values)
    sql, processors = _postgres_statement(engine.dialect, columns)
    parameters = {}
    for i, column in enumerate(columns):
        process = processors[i]
        values = [one.values[column] for one in batch]
        parameters[f"c{i}"] = [None if v is None else process(v) for v in values] if process else values
    # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return {row[0] for row in connection.exec_driver_sql(sql, parameters)}


@functools.lru_cache(maxsize=8)
def _postgres_statement(dialect: Dialect, columns: tuple[str, ...]) -> tuple[str, tuple]:
    """The insert of jobs (``columns``: the table's columns given) and of their first events, and each column's
    bind processor (SQLAlchemy's own: JSON, UTC times)."""
    arrays, processors = [], []
    for i, name in enumerate(columns):
        column_type = JOBS.c[name].type
        arrays.append(f"CAST(%(c{i})s AS {column_type.compile(dialect=dialect)}[])")
        processors.append(column_type.dialect_impl(dialect).bind_processor(dialect))
    names = ", ".join(columns)
    sql = (f"WITH new AS (INSERT INTO {JOBS.name} ({names}) SELECT * FROM unnest({', '.join(arrays)}) "
           "ON CONFLICT (user_id, idempotency_key) DO NOTHING RETURNING id, submitted_at, held) "
           f"INSERT INTO {EVENTS.name} (job_id, at, from_state, to_state, reason) "
           f"SELECT id, submitted_at, NULL, '{JobState.PENDING.value}', "
           f"CASE WHEN held THEN '{SUBMITTED_HELD}' ELSE '{SUBMITTED}' END FROM new RETURNING job_id")
    return sql, tuple(processors)
