"""New jobs' rows, written many at a time: the database half of a submission.

A batch of new jobs (``scheduler.store.group_commit`` gathers them) goes in with its first events in one
transaction, and a repeated idempotency key is left to the database: ``INSERT ... ON CONFLICT (user_id,
idempotency_key) DO NOTHING`` inserts the rows whose key is new and says which, so no look-up comes first.

On PostgreSQL it is one statement (the jobs' insert feeds the events' insert in a ``WITH``), run outside an
explicit transaction: one round trip for the whole batch, atomic as any statement. SQLite cannot put an insert
in a ``WITH``, so there it is two statements in one transaction (in the daemon's process: no round trips).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import Engine, case, insert, literal, null, select
from sqlalchemy.dialects import postgresql, sqlite

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
    rows = [one.values for one in batch]
    if engine.dialect.name == "postgresql":
        new = (postgresql.insert(JOBS).values(rows)
               .on_conflict_do_nothing(index_elements=[JOBS.c.user_id, JOBS.c.idempotency_key])
               .returning(JOBS.c.id, JOBS.c.submitted_at, JOBS.c.held).cte("new"))
        statement = insert(EVENTS).from_select(
            ["job_id", "at", "from_state", "to_state", "reason"],
            select(new.c.id, new.c.submitted_at, null(), literal(JobState.PENDING.value),
                   case((new.c.held, literal(SUBMITTED_HELD)), else_=literal(SUBMITTED))),
        ).returning(EVENTS.c.job_id)
        # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return set(connection.scalars(statement))
    jobs = (sqlite.insert(JOBS).values(rows)
            .on_conflict_do_nothing(index_elements=[JOBS.c.user_id, JOBS.c.idempotency_key])
            .returning(JOBS.c.id))
    with engine.begin() as connection:
        inserted = set(connection.scalars(jobs))
        if inserted:
            connection.execute(insert(EVENTS), [one.event for one in batch if one.values["id"] in inserted])
    return inserted
