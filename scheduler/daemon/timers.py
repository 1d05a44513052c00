"""The daemon's one-off timers on APScheduler: a deferred job's next look, a planned suspension, a time limit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from scheduler.clock import Clock, to_unix_s


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

    @property
    def running(self) -> bool:
        return self.scheduler is not None and self.scheduler.running

    def _real_time(self, at_s: float) -> datetime:
        return datetime.now(timezone.utc) + timedelta(seconds=max(0.0, at_s - to_unix_s(self.clock())))

    def tick_at(self, at_s: float) -> None:
        """A tick when the daemon's clock reaches ``at_s``."""
        if self.running:
            run_date = self._real_time(at_s)
            self.scheduler.add_job(self._tick, "date", run_date=run_date, id=f"tick-at-{run_date.timestamp():.0f}",
                                   replace_existing=True)

    def suspend_at(self, job_id: str, run_id: int, at_s: float) -> None:
        """Suspend an interruptible job at ``at_s`` (the end of its planned clean stretch)."""
        if self.running:
            self.scheduler.add_job(self._suspend, "date", run_date=self._real_time(at_s), args=(job_id, run_id),
                                   id=f"suspend-{job_id}", replace_existing=True)

    def time_limit(self, job_id: str, run_id: int, left_s: float) -> None:
        """Stop a job when its runs together reach its time limit (Slurm's --time): ``left_s`` from now."""
        if self.running:
            self.scheduler.add_job(self._time_up, "date",
                                   run_date=datetime.now(timezone.utc) + timedelta(seconds=left_s),
                                   args=(job_id, run_id), id=f"time-limit-{job_id}", replace_existing=True)
