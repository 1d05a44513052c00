"""The daemon's forecast of arrivals (``policies.arrivals``), fed from the store.

Every ``refresh_s`` it reads the jobs with a deadline submitted since its last read (up to ``SETTLE_S`` ago, so
that a submission still in a group commit is not passed over), estimates each one's run time as the queue does,
and records it; the policy's snapshot gets the arrivals they forecast. The history begins with the first job the
store holds: until a day of it has been seen nothing is expected, until a week a day's repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session, sessionmaker

from policies.arrivals import ArrivalHistory
from policies.backlog import Demand
from scheduler.clock import from_unix_s, to_unix_s
from scheduler.store.arrivals import Submission, first_submission_at, submissions

#: How long before now a read stops: a submission is written by then.
SETTLE_S = 60.0
#: Seconds between reads of the new submissions: what they forecast is a day or a week away.
REFRESH_S = 300.0


class ArrivalForecast:
    """The arrivals expected over the next day, from the submissions the store holds.

    work_s: a submission's run time at full speed, as estimates say (None: unknown; such a job is left out).
    """

    def __init__(self, sessions: sessionmaker[Session], work_s: Callable[[Submission], float | None],
                 refresh_s: float = REFRESH_S):
        self.sessions, self._work_s, self.refresh_s = sessions, work_s, refresh_s
        self._history: ArrivalHistory | None = None
        self._read_until_s: float | None = None  # submissions before this are recorded
        self._read_at_s = float("-inf")

    def expected(self, now_s: float) -> Sequence[Demand]:
        """The jobs expected to be submitted over the next day (reading the new submissions first, when due)."""
        if now_s - self._read_at_s >= self.refresh_s:
            self._read(now_s)
            self._read_at_s = now_s
        return () if self._history is None else self._history.expected(now_s)

    def _read(self, now_s: float) -> None:
        if self._history is None:
            first = first_submission_at(self.sessions)
            if first is None:
                return
            self._history = ArrivalHistory(to_unix_s(first))
            self._read_until_s = max(to_unix_s(first), now_s - self._history.lags_s[0] - self._history.horizon_s)
        until_s = now_s - SETTLE_S
        if until_s <= self._read_until_s:
            return
        for job in submissions(self.sessions, from_unix_s(self._read_until_s), from_unix_s(until_s)):
            work_s = self._work_s(job)
            if work_s is not None:
                self._history.record(Demand(job.id, tuple(job.zones or ()), job.gpus, work_s,
                                            to_unix_s(job.deadline_at), to_unix_s(job.submitted_at)))
        self._read_until_s = until_s
