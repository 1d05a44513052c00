"""Preemption live: on one logical GPU, a job that is due suspends a running interruptible job at a checkpoint and
runs; the suspended job then resumes and finishes. A real daemon, real Ray, real job processes (``synthetic`` jobs:
their steps are paced by the clock, so how busy the machine is changes no outcome here)."""

from datetime import timedelta

import pytest

from daemon_fixtures import (  # noqa: F401  (fixtures)
    JOB_TIMEOUT_S,
    SHORT_JOB,
    client,
    poll,
    running_daemon,
    synthetic_job,
    wait_until_running,
)
from scheduler.carbon.signal import DailyCycle, SyntheticSignal
from scheduler.clock import utc_now

pytestmark = pytest.mark.ray

# long enough to be still running when the due job comes and the suspension reaches it, even on a busy machine
LONG_JOB = synthetic_job(20.0)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # a flat signal: no cleaner hour to wait for, so carbon-aware starts each job as soon as it has room
    flat = SyntheticSignal(cycles={"DE": DailyCycle(300.0, 0.0, 0.0)})
    with running_daemon(tmp_path_factory.mktemp("wattsched"), signal=flat, logical_gpus=1, logical_zones=("DE",),
                        policy="carbon-aware") as daemon:
        yield daemon


def test_a_due_job_suspends_an_interruptible_one_which_resumes_after_it(daemon, client):
    store = daemon.store
    long = client.submit("synthetic", LONG_JOB, deadline=utc_now() + timedelta(days=1), interruptible=True)
    wait_until_running(client, long)
    # no slack: the estimator's own duration for it (nominal rates: no run of the kind has finished yet)
    expected_s = daemon.recent_runs.estimator().duration_s("synthetic", SHORT_JOB)
    due = client.submit("synthetic", SHORT_JOB, deadline=utc_now() + timedelta(seconds=expected_s))

    first = poll(lambda: (run := store.get(long.id).runs[0]).status != "running" and run, what="the long job stops")
    assert first.status == "suspended"
    why = f"suspended at a checkpoint to make room for job {due.id}, which is due; it resumes later"
    assert [e.reason for e in store.get(long.id).events if e.to_state == "suspended"] == [why]

    due = client.wait(due.id, timeout=JOB_TIMEOUT_S)
    assert due.state == "succeeded", due.raw
    long = client.wait(long.id, timeout=JOB_TIMEOUT_S)
    assert long.state == "succeeded", long.raw
    assert [e.to_state for e in store.get(long.id).events] == ["pending", "running", "suspended", "running",
                                                               "succeeded"]
    (due_run,), runs = store.get(due.id).runs, store.get(long.id).runs
    assert [r.status for r in runs] == ["suspended", "succeeded"]
    # one GPU: the due job ran between the long job's two runs, which resumed from its checkpoint
    assert runs[0].ended_at <= due_run.started_at and due_run.ended_at <= runs[1].started_at
    assert 0 < long.result["resumed_from_step"] < LONG_JOB["steps"] and long.result["steps_done"] == LONG_JOB["steps"]
