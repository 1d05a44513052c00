"""What the daemon's waiting queue (``scheduler.daemon.queue``) reads and writes: which jobs wait, the fields
scheduling needs of them, and many waits recorded in one transaction.

The queue keeps the waiting jobs in memory between scheduling rounds; these queries let it read them once, notice
jobs that came or went behind its back (another daemon's API, a restart) by their ids alone, and write only the
waits that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.clock import Clock
from scheduler.store.job_state import JobState
from scheduler.store.jobs import transition
from scheduler.store.models import Job

#: States of a job a policy may start (``JobStore.waiting`` lists the same jobs).
WAITING_STATES = tuple(s.value for s in (JobState.PENDING, JobState.DEFERRED, JobState.SUSPENDED))
#: Ids per ``IN (...)`` list: well under the bound parameters SQLite allows in one statement.
IDS_PER_QUERY = 500


@dataclass(frozen=True)
class QueuedJob:
    """A waiting job as scheduling sees it: what its ``JobRequest`` is built from, the user's own constraints
    (``not_before_at``, ``depends_on``), and its recorded wait (state, reason, code, plugin), so that a wait that
    says the same is not written again."""

    id: str
    kind: str
    spec: dict[str, Any]
    gpus: int
    zones: list[Any]
    deadline_at: datetime | None
    interruptible: bool
    priority: int
    submitted_at: datetime
    started_at: datetime | None
    progress: dict[str, Any] | None
    gpus_per_node: int | None
    not_before_at: datetime | None
    depends_on: list[Any]
    state: str
    reason: str
    wait_code: str | None
    wait_plugin: str | None


@dataclass(frozen=True)
class WaitRecord:
    """A wait to record, as ``JobStore.set_waiting`` records one."""

    job_id: str
    reason: str
    deferred: bool
    code: str | None = None
    plugin: str | None = None


_COLUMNS = (Job.id, Job.kind, Job.spec, Job.gpus, Job.zones, Job.deadline_at, Job.interruptible, Job.priority,
            Job.submitted_at, Job.started_at, Job.progress, Job.gpus_per_node, Job.not_before_at, Job.depends_on,
            Job.state, Job.reason, Job.wait_code, Job.wait_plugin)


def _waiting(query):
    return query.where(Job.state.in_(WAITING_STATES), Job.cancel_requested.is_(False), Job.held.is_(False))


def _chunks(ids: Iterable[str]) -> Iterable[list[str]]:
    ids = list(ids)
    for first in range(0, len(ids), IDS_PER_QUERY):
        yield ids[first:first + IDS_PER_QUERY]


def waiting_ids(sessions: sessionmaker[Session]) -> set[str]:
    """The ids of every job a policy may start now (not held, not being cancelled)."""
    with sessions() as session:
        return set(session.scalars(_waiting(select(Job.id))).all())


def waiting_jobs(sessions: sessionmaker[Session], ids: Iterable[str] | None = None) -> list[QueuedJob]:
    """The waiting jobs (those of ``ids`` that still wait, when given), in arrival order."""
    rows = []
    with sessions() as session:
        if ids is None:
            rows = session.execute(_waiting(select(*_COLUMNS))).all()
        else:
            for chunk in _chunks(ids):
                rows.extend(session.execute(_waiting(select(*_COLUMNS)).where(Job.id.in_(chunk))).all())
    jobs = [QueuedJob(*row) for row in rows]
    jobs.sort(key=lambda j: (j.submitted_at, j.id))
    return jobs


def state_after(state: str, deferred: bool) -> str:
    """The state a waiting job in ``state`` is in once a wait is recorded (as ``JobStore.set_waiting`` has it): a
    suspended job keeps its checkpoint state until it runs again."""
    if state == JobState.SUSPENDED.value:
        return state
    return (JobState.DEFERRED if deferred else JobState.PENDING).value


def record_waits(sessions: sessionmaker[Session], clock: Clock, waits: Sequence[WaitRecord],
                 states: Mapping[str, str]) -> None:
    """Record why each job waits, in one transaction, as ``JobStore.set_waiting`` does one job at a time; a job that
    no longer waits is left alone.

    states: each job's state as the caller last read it. The waits that leave a job in that state (most: a new
    reason) are written by one statement run for all of them, which passes over a job whose state has moved
    since; those that change it go through the state machine, which records the change.
    """
    if not waits:
        return
    same = [w for w in waits if states.get(w.job_id) == state_after(states.get(w.job_id, ""), w.deferred)]
    moving = [w for w in waits if states.get(w.job_id) != state_after(states.get(w.job_id, ""), w.deferred)]
    now = clock()
    with sessions.begin() as session:
        if same:
            table = Job.__table__
            session.execute(
                table.update().where(table.c.id == bindparam("b_id"), table.c.state == bindparam("b_state"))
                .values(reason=bindparam("b_reason"), wait_code=bindparam("b_code"), wait_plugin=bindparam("b_plugin")),
                [{"b_id": w.job_id, "b_state": states[w.job_id], "b_reason": w.reason, "b_code": w.code,
                  "b_plugin": w.plugin or None} for w in same])
        for chunk in _chunks({w.job_id for w in moving}):
            session.scalars(select(Job).where(Job.id.in_(chunk))).all()  # loaded into the session, by id
        for wait in moving:
            job = session.get(Job, wait.job_id)
            if job is None or not JobState(job.state).waiting:
                continue
            transition(session, job, JobState(state_after(job.state, wait.deferred)), wait.reason, now)
            if (job.wait_code, job.wait_plugin) != (wait.code, wait.plugin or None):
                job.wait_code, job.wait_plugin = wait.code, wait.plugin or None
