"""The daemon's one-off timers on APScheduler: a deferred job's next look, a planned suspension, a time limit.

They live in the leader's memory. A daemon that starts leading (a restart, a standby taking over) arms the
running runs' time limits and planned suspensions again from the database (``take_over``); a deferred job's next
look needs nothing kept, since the first tick of the new term decides on every waiting job again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from scheduler.clock import Clock, from_unix_s, to_unix_s
from scheduler.errors import DatabaseError
from scheduler.store.timers import RunTimers, TimerStore

log = logging.getLogger(__name__)


class Timers:
    """Dated jobs on the daemon's APScheduler scheduler (``None`` or stopped: timers are dropped, as when the
    daemon is driven tick by tick in tests).

    Decisions give times on the daemon's clock; APScheduler runs on the real clock, so each time is turned into
    the real moment at which the daemon's clock will read it.
    """

    def __init__(self, clock: Clock, tick: Callable[[], None], suspend: Callable[[str, int], None],
                 time_up: Callable[[str, int], None]):
        self.clock, self._tick, self._suspend, self._time_up = clock, tick, suspend, time_up
        self.scheduler = None  # set once the daemon's APScheduler scheduler runs
        self.store: TimerStore | None = None  # where planned suspensions are kept; set by take_over

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    def take_over(self, store: TimerStore, running: Sequence[RunTimers]) -> int:
        """Begin a term as the leader (the scheduler running): keep planned suspensions in ``store`` from now on,
        and arm again the time limits and planned suspensions of the ``running`` runs (``store.running``, read
        when the term began). Returns how many timers were armed."""
        self.store = store
        armed = 0
        for run in running:
            if run.time_left_s is not None:
                self.time_limit(run.job_id, run.run_id, run.time_left_s)
                armed += 1
            if run.planned_suspend_at is not None:
                self._arm_suspension(run.job_id, run.run_id, to_unix_s(run.planned_suspend_at))
                armed += 1
        return armed

    def _real_time(self, at_s: float) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, at_s - to_unix_s(self.clock())))

    def tick_at(self, at_s: float) -> None:
        """A tick when the daemon's clock reaches ``at_s``."""
        if self.running:
            run_date = self._real_time(at_s)
            self.scheduler.add_job(self._tick, "date", run_date=run_date, id=f"tick-at-{run_date.timestamp():.0f}",
                                   replace_existing=True)

    def suspend_at(self, job_id: str, run_id: int, at_s: float) -> None:
        """Suspend an interruptible job at ``at_s`` (the end of its planned clean stretch), and keep the plan with
        the run, so that a daemon taking over arms it again."""
        if self.running:
            self._arm_suspension(job_id, run_id, at_s)
            if self.store is not None:
                try:
                    self.store.plan_suspension(run_id, from_unix_s(at_s))
                except DatabaseError as exc:  # armed all the same; only a daemon taking over would miss it
                    log.warning("could not keep job %s's planned suspension: %s", job_id, exc)

    def _arm_suspension(self, job_id: str, run_id: int, at_s: float) -> None:
        if self.running:
            self.scheduler.add_job(self._suspend, "date", run_date=self._real_time(at_s), args=(job_id, run_id),
                                   id=f"suspend-{job_id}", replace_existing=True)

    def time_limit(self, job_id: str, run_id: int, left_s: float) -> None:
        """Stop a job when its runs together reach its time limit (Slurm's --time): ``left_s`` from now."""
        if self.running:
            self.scheduler.add_job(self._time_up, "date",
                                   run_date=datetime.now(timezone.utc) + timedelta(seconds=left_s),
                                   args=(job_id, run_id), id=f"time-limit-{job_id}", replace_existing=True)
