"""What a daemon needs from the database to arm its timers again when it starts leading: each running run's time
left under its job's time limit, and its planned suspension.

A daemon's timers live in its memory (APScheduler's in-memory store); a daemon that takes over, after a restart
or as a standby whose leader died, reads them back from here (``scheduler.daemon.timers.Timers.take_over``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from scheduler.store.job_state import RunStatus
from scheduler.store.models import Job, Run


@dataclass(frozen=True)
class RunTimers:
    """The timers one running run needs: ``time_left_s`` until its job's time limit (None: no limit; 0: already
    reached), and when it is planned to be suspended (None: no plan)."""

    job_id: str
    run_id: int
    time_left_s: float | None
    planned_suspend_at: datetime | None


class TimerStore:
    """Planned suspensions kept with their runs, and the timers of the running runs, in the database behind
    ``sessions``."""

    def __init__(self, sessions: sessionmaker[Session]):
        self.sessions = sessions

    def plan_suspension(self, run_id: int, at: datetime) -> None:
        """Keep when ``run_id`` is planned to be suspended."""
        with self.sessions.begin() as session:
            session.execute(update(Run).where(Run.id == run_id).values(planned_suspend_at=at))

    def running(self, now: datetime) -> list[RunTimers]:
        """The timers of every running run at ``now``: its job's time limit less what the job's runs have run
        (the finished ones, and this one since its start), and its planned suspension."""
        open_jobs = select(Run.job_id).where(Run.status == RunStatus.RUNNING.value)
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Job.time_limit_s, Run.id, Run.status, Run.started_at, Run.ended_at,
                       Run.planned_suspend_at)
                .join(Run, Run.job_id == Job.id).where(Job.id.in_(open_jobs)).order_by(Job.id, Run.attempt)
            ).all()
        used_s: dict[str, float] = {}
        for job_id, _, _, _, started_at, ended_at, _ in rows:
            used_s[job_id] = used_s.get(job_id, 0.0) + ((ended_at or now) - started_at).total_seconds()
        return [
            RunTimers(job_id, run_id, None if limit_s is None else max(0.0, limit_s - used_s[job_id]), planned)
            for job_id, limit_s, run_id, status, _, _, planned in rows if status == RunStatus.RUNNING.value
        ]
