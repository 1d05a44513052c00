"""What the daemon's waiting queue (``scheduler.daemon.queue``) reads and writes: which jobs wait, the fields
scheduling needs of them, and many waits recorded in one transaction.

The queue keeps the waiting jobs in memory between scheduling rounds; these queries let it read them once, notice
jobs that came or went behind its back (another daemon's API, a restart) by their ids alone, and write only the
waits that changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
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


def record_waits(sessions: sessionmaker[Session], clock: Clock, waits: Sequence[WaitRecord]) -> None:
    """Record why each job waits, in one transaction; a job that no longer waits is left alone (as
    ``JobStore.set_waiting`` does, one job at a time)."""
    if not waits:
        return
    now = clock()
    with sessions.begin() as session:
        for chunk in _chunks({w.job_id for w in waits}):
            session.scalars(select(Job).where(Job.id.in_(chunk))).all()  # loaded into the session, by id
        for wait in waits:
            job = session.get(Job, wait.job_id)
            if job is None or not JobState(job.state).waiting:
                continue
            target = JobState.DEFERRED if wait.deferred else JobState.PENDING
            if JobState(job.state) == JobState.SUSPENDED:
                target = JobState.SUSPENDED  # it keeps its checkpoint state until it runs again
            transition(session, job, target, wait.reason, now)
            if (job.wait_code, job.wait_plugin) != (wait.code, wait.plugin or None):
                job.wait_code, job.wait_plugin = wait.code, wait.plugin or None
