"""What the daemon reads to forecast arrivals (``policies.arrivals``): the jobs with a deadline submitted within a
window, whatever became of them since, and when the first job of all was submitted."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.models import Job


@dataclass(frozen=True)
class Submission:
    """A job with a deadline as it was submitted: what its demand is built from."""

    id: str
    kind: str
    spec: dict[str, Any]
    gpus: int
    zones: list[Any]
    deadline_at: datetime
    submitted_at: datetime


def submissions(sessions: sessionmaker[Session], since: datetime, until: datetime) -> list[Submission]:
    """The jobs with a deadline submitted at or after ``since`` and before ``until``, in order of submission."""
    query = (select(Job.id, Job.kind, Job.spec, Job.gpus, Job.zones, Job.deadline_at, Job.submitted_at)
             .where(Job.submitted_at >= since, Job.submitted_at < until, Job.deadline_at.is_not(None))
             .order_by(Job.submitted_at, Job.id))
    with sessions() as session:
        return [Submission(*row) for row in session.execute(query).all()]


def first_submission_at(sessions: sessionmaker[Session]) -> datetime | None:
    """When the first job in the store was submitted (None: there is none)."""
    with sessions() as session:
        return session.scalar(select(func.min(Job.submitted_at)))
