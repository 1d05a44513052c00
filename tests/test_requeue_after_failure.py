"""A failed run of an interruptible job (a gang's rank crashed, a process was killed) queues it again to resume
from its checkpoint, a bounded number of times; other jobs fail at once."""

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock

from scheduler.store.engine import make_engine, make_session_factory, upgrade
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import REQUEUES_AFTER_FAILURE, JobStore

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
SPEC = {"steps": 10}


@pytest.fixture
def store(upgraded_db_url, tmp_path):
    engine = make_engine(upgraded_db_url)
    upgrade(engine)
    yield JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs")
    engine.dispose()


def fail_once(store, job_id, why="rank 1 failed: killed by SIGKILL"):
    run = store.start_run(job_id, "n", "DE", ["w"], None, "go")
    store.clock.advance(seconds=30)
    return store.finish_run(run.id, RunStatus.FAILED, -9, why, None, None)


def test_an_interruptible_job_is_queued_again_after_a_failed_run_until_its_allowance_is_spent(store):
    job = store.submit(store.validate("synthetic", SPEC, interruptible=True, deadline=T0 + timedelta(days=1)))
    for failure in range(1, REQUEUES_AFTER_FAILURE + 1):
        after = fail_once(store, job.id)
        assert after.state == "pending", after.reason
        assert after.reason == (f"rank 1 failed: killed by SIGKILL; queued again to resume from its checkpoint "
                                f"(failure {failure} of {REQUEUES_AFTER_FAILURE + 1} allowed)")
    last = fail_once(store, job.id)
    assert last.state == "failed" and last.reason == "failed: rank 1 failed: killed by SIGKILL"
    assert len(store.get(job.id).runs) == REQUEUES_AFTER_FAILURE + 1


def test_a_job_that_cannot_resume_fails_at_its_first_failed_run(store):
    job = store.submit(store.validate("synthetic", SPEC))
    assert fail_once(store, job.id).state == "failed"
