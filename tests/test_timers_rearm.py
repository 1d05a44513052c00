"""A daemon that starts leading (a restart, a standby taking over) arms the running runs' time limits and planned
suspensions again: they lived in the previous leader's memory. Migration 0008 keeps a run's planned suspension.

The store and the timers on a real database and a real APScheduler scheduler; then a real daemon on Ray that
stops while its job runs, and a new daemon on the same database that stops the job at its limit.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fakes import FakeClock
from test_api_migrations import check_new_runs_column

from scheduler.clock import to_unix_s
from scheduler.daemon.timers import Timers
from scheduler.store.engine import make_engine, make_session_factory
from scheduler.store.jobs import JobStore
from scheduler.store.timers import TimerStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_0008_adds_the_planned_suspension_to_runs_and_downgrades(db_url):
    check_new_runs_column(db_url, "0007", "planned_suspend_at", "running")


@pytest.fixture
def stores(upgraded_db_url, tmp_path):
    engine = make_engine(upgraded_db_url)
    sessions = make_session_factory(engine)
    clock = FakeClock(T0)
    yield JobStore(sessions, clock, tmp_path / "jobs"), TimerStore(sessions), clock
    engine.dispose()


def running_timers(clock):
    """Timers on a started APScheduler scheduler whose callbacks never fire within a test (they are far off)."""
    from apscheduler.schedulers.background import BackgroundScheduler

    timers = Timers(clock, tick=lambda: None, suspend=lambda *a: None, time_up=lambda *a: None)
    timers.scheduler = BackgroundScheduler(timezone=timezone.utc)
    timers.scheduler.start(paused=True)  # keeps its jobs, runs none
    return timers


def seconds_from_now(timers, job_id: str) -> float:
    run_date = timers.scheduler.get_job(job_id).next_run_time
    return (run_date - datetime.now(timezone.utc)).total_seconds()


def test_a_new_leader_arms_the_time_left_and_the_planned_suspension_of_each_running_run(stores):
    jobs, timer_store, clock = stores
    limited = jobs.submit(jobs.validate("synthetic", {"steps": 5}, time_limit_s=600, interruptible=True))
    first = jobs.start_run(limited.id, "node-a", "DE", ["w0"], None, "running in zone DE")
    clock.advance(seconds=100)
    jobs.abort_run(first.id, "the worker refused")  # a run of 100 s that counts against the limit
    run = jobs.start_run(limited.id, "node-a", "DE", ["w0"], None, "running in zone DE")
    unlimited = jobs.submit(jobs.validate("synthetic", {"steps": 5}))
    other = jobs.start_run(unlimited.id, "node-a", "DE", ["w1"], None, "running in zone DE")

    leader = running_timers(clock)
    leader.store = timer_store
    leader.suspend_at(limited.id, run.id, to_unix_s(clock()) + 3000)  # kept with the run
    leader.scheduler.shutdown(wait=False)  # the leader dies, its timers with it

    clock.advance(seconds=200)  # this run has run 200 s: 300 s of 600 s are left
    successor = running_timers(clock)
    try:
        running = timer_store.running(clock())
        assert {(r.job_id, r.run_id, r.time_left_s) for r in running} == {
            (limited.id, run.id, 300.0), (unlimited.id, other.id, None)}
        assert successor.take_over(timer_store, running) == 2
        assert seconds_from_now(successor, f"time-limit-{limited.id}") == pytest.approx(300, abs=30)
        assert seconds_from_now(successor, f"suspend-{limited.id}") == pytest.approx(2800, abs=30)
        assert successor.scheduler.get_job(f"time-limit-{limited.id}").args == (limited.id, run.id)
        assert successor.scheduler.get_job(f"time-limit-{unlimited.id}") is None
        assert successor.scheduler.get_job(f"suspend-{unlimited.id}") is None
    finally:
        successor.scheduler.shutdown(wait=False)


def test_a_limit_already_reached_while_no_daemon_led_is_enforced_at_once(stores):
    jobs, timer_store, clock = stores
    job = jobs.submit(jobs.validate("synthetic", {"steps": 5}, time_limit_s=60))
    jobs.start_run(job.id, "node-a", "DE", ["w0"], None, "running in zone DE")
    clock.advance(seconds=90)
    [run] = timer_store.running(clock())
    assert run.time_left_s == 0.0


# --- a real daemon on Ray ------------------------------------------------------------------------------------


@pytest.mark.ray
def test_a_daemon_started_after_the_first_stopped_ends_the_running_job_at_its_limit(tmp_path):
    from daemon_fixtures import ENDLESS_JOB, JOB_TIMEOUT_S, running_daemon, wait_until_running

    from scheduler.client import Client
    from scheduler.daemon.daemon import Daemon

    limit_s = 20  # long enough for the first daemon to stop before it, on a loaded machine
    with running_daemon(tmp_path, leader_lease_s=4.0, leader_renew_s=0.5) as first:
        client = Client(url=first.url, token=first.token, timeout_s=60)
        job = wait_until_running(client, client.submit("synthetic", ENDLESS_JOB, time_limit_s=limit_s))
        [run] = job.runs
        first.stop()  # its timers go with it; the job runs on under the controller

        second = Daemon(first.settings).start()  # the same database and Ray
        try:
            assert second.role == "leader"
            client = Client(url=second.url, token=second.token, timeout_s=60)
            assert client.get(job.id).state == "running", "the first daemon stopped after the job's limit"
            done = client.wait(job.id, timeout=JOB_TIMEOUT_S)
            assert (done.state, done.reason) == ("cancelled", f"time limit of {limit_s} s reached")
            [ended] = second.store.get(job.id).runs  # the same run, stopped, not requeued
            assert (ended.id, ended.status) == (run.id, "cancelled")
            assert (ended.ended_at - ended.started_at).total_seconds() >= limit_s
        finally:
            second.stop()
