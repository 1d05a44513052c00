"""Expected arrivals: the demand of the jobs still to come, forecast from the arrivals of an earlier day.

The queue's replay (``policies.plugins.pressure``) weighs each deferral against the jobs waiting now. On a busy
cluster that is not enough: work deferred out of dirty hours ahead of a peak of arrivals is work the peak then
has no room for. Arrivals, like carbon, follow the day and the week: the jobs submitted over the same
``horizon_s`` (a day) one ``lag_s`` earlier (a week; a day until a week of arrivals has been seen) are the
forecast of the next ones, each expected one lag after its own submission, with its GPUs, its run time and its
slack. The caller records each job as it is submitted; a policy reads the forecast.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

from policies.backlog import Demand

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
#: the id every expected job has: no waiting job's, so a policy never books a deferral for it
EXPECTED_ID = ""


class ArrivalHistory:
    """The submissions of the last ``max(lags_s) + horizon_s``, recorded by the caller from ``since_s`` on
    (``record``), and the arrivals they forecast over the next ``horizon_s`` (``expected``): those of the longest
    of ``lags_s`` that the recorded history covers. Time is passed in, never read."""

    def __init__(self, since_s: float, lags_s: tuple[float, ...] = (WEEK_S, DAY_S), horizon_s: float = DAY_S):
        if not lags_s or min(lags_s) < horizon_s or horizon_s <= 0:
            raise ValueError(f"need lags_s >= horizon_s > 0, got lags_s={lags_s}, horizon_s={horizon_s}")
        self.since_s, self.lags_s, self.horizon_s = since_s, tuple(sorted(lags_s, reverse=True)), horizon_s
        self._times: list[float] = []
        self._demands: list[Demand] = []  # in order of submission (ready_s: the submission time)

    def record(self, demand: Demand) -> None:
        """A job submitted at ``demand.ready_s`` with its GPUs, run time, deadline and zones (the caller leaves
        out jobs without a deadline: nothing of theirs can be late)."""
        if self._times and demand.ready_s < self._times[-1]:
            raise ValueError("arrivals must be recorded in order of submission")
        self._times.append(demand.ready_s)
        self._demands.append(demand)
        keep_from = demand.ready_s - self.lags_s[0] - self.horizon_s
        if self._times[0] < keep_from - self.horizon_s:  # drop the old ones now and then, not at every record
            cut = bisect_left(self._times, keep_from)
            del self._times[:cut], self._demands[:cut]

    def expected(self, now_s: float) -> Sequence[Demand]:
        """The jobs expected to be submitted within ``horizon_s`` after ``now_s``, each one lag after the
        submission it repeats (its ``ready_s`` then); built only as a policy reads them."""
        lag = next((lag for lag in self.lags_s if now_s - lag >= self.since_s), None)
        if lag is None:
            return ()
        lo = bisect_right(self._times, now_s - lag)
        hi = bisect_right(self._times, now_s - lag + self.horizon_s)
        return ExpectedArrivals(self._demands[lo:hi], lag)


class ExpectedArrivals(Sequence[Demand]):
    """The submissions that forecast the next arrivals, each read as the ``Demand`` expected one ``lag_s`` later.

    Most rounds' policies never look (the queue is not pressed): the demands are made only when one does."""

    def __init__(self, submitted: list[Demand], lag_s: float):
        self._submitted, self.lag_s = submitted, lag_s

    def __len__(self) -> int:
        return len(self._submitted)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        d, lag = self._submitted[i], self.lag_s
        return Demand(EXPECTED_ID, d.zones, d.gpus, d.work_s, d.deadline_s + lag, d.ready_s + lag)

    def __iter__(self) -> Iterator[Demand]:
        lag = self.lag_s
        for d in self._submitted:
            yield Demand(EXPECTED_ID, d.zones, d.gpus, d.work_s, d.deadline_s + lag, d.ready_s + lag)
