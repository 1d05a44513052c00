"""A start that was never launched (a worker refused it, the controller was away) queues its job again and is no
failure of the job: it does not spend an interruptible job's allowance of requeues after failed runs."""

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock

from scheduler.store.engine import make_engine, make_session_factory
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import NOT_LAUNCHED, REQUEUES_AFTER_FAILURE, JobStore
from scheduler.store.views import job_view

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
SPEC = {"steps": 10}


@pytest.fixture
def store(upgraded_db_url, tmp_path):
    engine = make_engine(upgraded_db_url)
    yield JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs")
    engine.dispose()


def refused(store, job_id):
    run = store.start_run(job_id, "n", "DE", ["w"], None, "go")
    store.abort_run(run.id, "worker w is busy")


def fail_once(store, job_id):
    run = store.start_run(job_id, "n", "DE", ["w"], None, "go")
    store.clock.advance(seconds=30)
    return store.finish_run(run.id, RunStatus.FAILED, -9, "rank 1 failed: killed by SIGKILL", None, None)


def test_refused_starts_do_not_spend_the_allowance_of_requeues_after_failure(store):
    job = store.submit(store.validate("synthetic", SPEC, interruptible=True, deadline=T0 + timedelta(days=1)))
    for failure in range(1, REQUEUES_AFTER_FAILURE + 1):
        refused(store, job.id)
        refused(store, job.id)
        after = fail_once(store, job.id)
        assert after.state == "pending", after.reason
        assert f"(failure {failure} of {REQUEUES_AFTER_FAILURE + 1} allowed)" in after.reason
    refused(store, job.id)
    assert fail_once(store, job.id).state == "failed"


def test_a_refused_start_queues_the_job_again_and_says_it_never_launched(store):
    job = store.submit(store.validate("synthetic", SPEC))  # not interruptible: its first real failure fails it
    for _ in range(REQUEUES_AFTER_FAILURE + 2):
        refused(store, job.id)
    view = job_view(store.get(job.id))
    assert view["state"] == "pending" and view["reason"] == "could not start: worker w is busy; queued again"
    assert {(r["exit_status"], r["message"]) for r in view["runs"]} == {("failed", f"{NOT_LAUNCHED}worker w is busy")}
    assert fail_once(store, job.id).state == "failed"
