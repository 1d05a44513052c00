"""Expected arrivals: the jobs submitted a day (then a week) earlier forecast the next day's, for the queue's
replay; the daemon reads them from its store."""

from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeClock
from policies.arrivals import DAY_S, EXPECTED_ID, ArrivalHistory
from policies.backlog import Demand
from scheduler.clock import to_unix_s
from scheduler.config import Settings
from scheduler.daemon.arrivals import SETTLE_S
from scheduler.daemon.daemon import Daemon

H = 3600.0


def submitted(job_id, at_s, gpus=1, work_s=H, slack_s=6 * H, zones=("DE",)):
    return Demand(job_id, zones, gpus, work_s, at_s + work_s + slack_s, at_s)


def test_nothing_is_expected_until_a_day_of_arrivals_has_been_seen():
    history = ArrivalHistory(since_s=0.0)
    history.record(submitted("a", 2 * H))
    assert history.expected(20 * H) == ()
    (e,) = history.expected(DAY_S)
    # one day after its submission, with its GPUs, run time and slack
    assert (e.job_id, e.ready_s, e.deadline_s, e.gpus, e.work_s) == (EXPECTED_ID, DAY_S + 2 * H, DAY_S + 9 * H, 1, H)


def test_the_next_day_repeats_yesterday_then_the_same_day_last_week():
    history = ArrivalHistory(since_s=0.0)
    for day in range(8):
        history.record(submitted(f"d{day}", day * DAY_S + 10 * H, gpus=day + 1))
    # on day 6 (less than a week seen) the next 24 h repeat day 5 from this hour on
    assert [e.gpus for e in history.expected(6 * DAY_S)] == [6]  # day 5's job, expected on day 6
    # from day 7 on, last week's same day: on day 8 at 00:00 the day 1 job is expected on day 8
    assert [(e.gpus, e.ready_s) for e in history.expected(8 * DAY_S)] == [(2, 8 * DAY_S + 10 * H)]
    # only what falls within the next day: at 12:00 on day 8 the day-1 job (10:00) is past and day 2's ahead
    assert [e.gpus for e in history.expected(8 * DAY_S + 12 * H)] == [3]


def test_old_arrivals_are_dropped_and_the_order_of_submission_is_kept():
    history = ArrivalHistory(since_s=0.0)
    for i in range(40 * 24):
        history.record(submitted(f"j{i}", i * H))
    assert len(history._times) < 10 * 24  # no more than a week and two days are kept
    assert len(history.expected(40 * DAY_S)) == 24
    with pytest.raises(ValueError, match="order of submission"):
        history.record(submitted("late", 0.0))
    with pytest.raises(ValueError, match="lags_s"):
        ArrivalHistory(0.0, lags_s=(H,), horizon_s=DAY_S)


@pytest.fixture
def daemon(upgraded_db_url, tmp_path):
    clock = FakeClock(datetime(2026, 3, 1, tzinfo=timezone.utc))
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock)
    yield daemon
    daemon.engine.dispose()


def test_the_daemon_expects_yesterdays_jobs_with_a_deadline_from_its_store(daemon):
    clock = daemon.clock
    start = clock()
    for hours, gpus, deadline in ((1, 2, True), (2, 1, False), (5, 2, True), (8, 1, True)):
        clock.now = start + timedelta(hours=hours)
        daemon.submit(daemon.store.validate("synthetic", {"steps": 10}, gpus=gpus,
                                            deadline=clock.now + timedelta(hours=6) if deadline else None))
    # the history begins with the store's first job: a day after it, the jobs with a deadline submitted since
    # the same hour yesterday are expected one day after their submission (the one without has nothing to be
    # late for)
    clock.now = start + timedelta(days=1, hours=3)
    expected = tuple(daemon.arrivals.expected(to_unix_s(clock.now)))
    assert [(e.ready_s, e.gpus) for e in expected] == [
        (to_unix_s(start + timedelta(days=1, hours=5)), 2), (to_unix_s(start + timedelta(days=1, hours=8)), 1)]
    first = expected[0]
    assert first.deadline_s == pytest.approx(first.ready_s + 6 * H)
    assert 0 < first.work_s < 6 * H and first.zones == ()
    # the snapshot hands them to the policy
    assert tuple(daemon.snapshot([]).expected) == expected
    # a job submitted since is read at the next refresh, once it has settled
    clock.now = start + timedelta(days=1, hours=4)
    daemon.submit(daemon.store.validate("synthetic", {"steps": 10}, deadline=clock.now + timedelta(hours=3)))
    assert len(daemon.arrivals.expected(to_unix_s(clock.now))) == 2  # not read again yet
    clock.now += timedelta(seconds=SETTLE_S + daemon.arrivals.refresh_s)
    assert [e.ready_s for e in daemon.arrivals.expected(to_unix_s(clock.now))] == [
        to_unix_s(start + timedelta(days=1, hours=h)) for h in (5, 8)] + [to_unix_s(start + timedelta(days=2, hours=4))]
