"""The job store on real SQLite and PostgreSQL: submission, transitions with reasons, runs, energy, history."""

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock

from scheduler.store.engine import make_engine, make_session_factory, upgrade
from scheduler.store.models import RunEnergy
from scheduler.errors import InvalidRequest, InvalidTransition, JobNotFound
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore, OpenRun
from policies.snapshot import CapStep

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(upgraded_db_url, tmp_path):
    engine = make_engine(upgraded_db_url)
    upgrade(engine)
    yield JobStore(make_session_factory(engine), FakeClock(T0), tmp_path / "jobs")
    engine.dispose()


TRAIN = {"steps": 10, "image_size": 8}


def test_upgrade_is_idempotent(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)
    engine.dispose()


def test_submit_normalises_the_spec_and_records_the_first_event(store):
    job = store.submit(store.validate("diffusion-train", TRAIN, gpus=1, zones=["DE"]))
    assert job.state == "pending" and job.reason == "queued"
    assert job.spec["steps"] == 10 and "batch_size" in job.spec  # defaults filled in
    assert job.zones == ["DE"]
    assert job.submitted_at == T0 and job.submitted_at.tzinfo is not None
    assert [(e.from_state, e.to_state) for e in job.events] == [(None, "pending")]


@pytest.mark.parametrize("kwargs,field", [
    ({"kind": "shell"}, "kind"),
    ({"spec": {"steps": "many"}}, "spec.steps"),
    ({"spec": {"stpes": 3}}, "spec.stpes"),
    ({"gpus": 0}, "gpus"),
    ({"gpus": True}, "gpus"),
    ({"zones": "DE"}, "zones"),
    ({"deadline": T0 - timedelta(hours=1)}, "deadline"),
    ({"interruptible": "yes"}, "interruptible"),
])
def test_bad_submissions_name_the_field(store, kwargs, field):
    args = {"kind": "diffusion-train", "spec": TRAIN, **kwargs}
    with pytest.raises(InvalidRequest) as info:
        store.validate(**args)
    assert info.value.field == field
    assert field.split(".")[-1] in str(info.value)
    assert store.list()[1] == 0  # nothing was written


def test_checkpoint_may_name_a_job(store):
    train = store.submit(store.validate("diffusion-train", TRAIN))
    sample = store.validate("diffusion-sample", {"checkpoint": f"job:{train.id}"})
    assert sample.spec["checkpoint"] == train.workdir
    with pytest.raises(InvalidRequest, match="no job"):
        store.validate("diffusion-sample", {"checkpoint": "job:nope"})


def test_run_lifecycle_records_energy_and_every_transition(store):
    job = store.submit(store.validate("diffusion-train", TRAIN))
    store.set_waiting(job.id, "waiting for a free GPU in zone DE", deferred=False)
    assert store.get(job.id).reason == "waiting for a free GPU in zone DE"
    run = store.start_run(job.id, "node1", "DE", ["w1"], None, "running in zone DE")
    store.add_progress(run.id, {"step": 3}, [[T0.timestamp() + 1, 100.0, 5.0, 100.0, 5.0]])
    energy = RunEnergy(gpu_energy_j=500.0, cpu_energy_j=20.0, gpu_method="simulated", cpu_method="estimate",
                       avg_power_w=104.0, peak_power_w=150.0, duration_s=5.0, intensity_g_per_kwh=300.0,
                       emissions_g=0.0433, carbon_source="synthetic", carbon_basis="synthetic")
    store.finish_run(run.id, RunStatus.SUCCEEDED, 0, None, energy, {"steps_done": 10})
    # delivered twice (daemon restart): recorded once
    store.finish_run(run.id, RunStatus.FAILED, 1, "boom", None, None)
    job = store.get(job.id)
    assert job.state == "succeeded" and job.result == {"steps_done": 10} and job.progress == {"step": 3}
    assert [e.to_state for e in job.events] == ["pending", "running", "succeeded"]
    assert job.runs[0].energy.gpu_energy_j == 500.0 and job.runs[0].status == "succeeded"
    assert len(store.stored_samples(run.id)) == 1
    with pytest.raises(InvalidTransition):
        store.request_cancel(job.id)


def test_cancel_pending_is_immediate_and_running_is_requested(store):
    pending = store.submit(store.validate("diffusion-train", TRAIN))
    job, must_stop = store.request_cancel(pending.id)
    assert job.state == "cancelled" and not must_stop
    running = store.submit(store.validate("diffusion-train", TRAIN))
    run = store.start_run(running.id, "n", "DE", ["w"], None, "go")
    job, must_stop = store.request_cancel(running.id)
    assert must_stop and job.state == "running" and job.cancel_requested
    assert running.id not in [j.id for j in store.waiting()]
    store.finish_run(run.id, RunStatus.CANCELLED, 143, None, None, None)
    assert store.get(running.id).state == "cancelled"
    with pytest.raises(JobNotFound):
        store.request_cancel("missing")


def test_a_lost_run_of_a_job_being_cancelled_ends_cancelled(store):
    job = store.submit(store.validate("diffusion-train", TRAIN))
    run = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    store.request_cancel(job.id)
    store.finish_run(run.id, RunStatus.LOST, None, "node died", None, None)
    assert store.get(job.id).state == "cancelled"


def test_running_jobs_are_read_with_their_open_runs_cap_and_the_seconds_of_all_their_runs(store):
    job = store.submit(store.validate("diffusion-train", TRAIN, interruptible=True, deadline=T0 + timedelta(days=1)))
    idle = store.submit(store.validate("diffusion-train", TRAIN))
    first = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    store.clock.advance(seconds=10)
    store.finish_run(first.id, RunStatus.SUSPENDED, 0, None, None, None)
    store.clock.advance(seconds=10)
    second = store.start_run(job.id, "n", "DE", ["w"], 150.0, "go on", CapStep(0.5, 0.8, 0.5))
    store.add_progress(second.id, {"step": 4, "total": 10}, [])
    store.clock.advance(seconds=30)
    (found,) = store.running_jobs(store.clock())
    assert found == OpenRun(job.id, "diffusion-train", store.get(job.id).spec, {"step": 4, "total": 10}, 1, True,
                            T0 + timedelta(days=1), 0.5, run_s=40.0, runs=2)
    assert idle.id != found.job_id


def test_a_suspension_asked_with_a_reason_ends_with_it_and_a_cancel_still_wins(store):
    job = store.submit(store.validate("diffusion-train", TRAIN, interruptible=True))
    assert not store.request_suspend(job.id, "to make room")  # not running
    run = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    assert store.request_suspend(job.id, "to make room for job x")
    assert store.get(job.id).reason == "stopping: to make room for job x"
    store.finish_run(run.id, RunStatus.SUSPENDED, 0, None, None, None)
    assert (store.get(job.id).state, store.get(job.id).reason) == ("suspended", "to make room for job x")

    run = store.start_run(job.id, "n", "DE", ["w"], None, "go on")
    store.request_cancel(job.id)
    assert not store.request_suspend(job.id, "to make room for job y")
    store.finish_run(run.id, RunStatus.SUSPENDED, 0, None, None, None)
    assert (store.get(job.id).state, store.get(job.id).reason) == ("cancelled", "cancelled by the user")


def test_lost_run_requeues_and_failed_run_keeps_the_error(store):
    job = store.submit(store.validate("diffusion-train", TRAIN))
    run = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    store.finish_run(run.id, RunStatus.LOST, None, "node n died", None, None)
    assert store.get(job.id).state == "pending"
    run2 = store.start_run(job.id, "n2", "FR", ["w2"], None, "go again")
    assert run2.attempt == 2
    store.finish_run(run2.id, RunStatus.FAILED, 1, "Traceback...\nValueError: bad data", None, None)
    job = store.get(job.id)
    assert job.state == "failed" and "ValueError: bad data" in job.reason and "Traceback" in job.error


def test_list_filters_and_history_range(store):
    clock = store.clock
    ids = []
    for i in range(3):
        clock.now = T0 + timedelta(minutes=i)
        job = store.submit(store.validate("diffusion-train" if i < 2 else "diffusion-sample",
                                          TRAIN if i < 2 else {"checkpoint": "/x"}))
        store.start_run(job.id, "n", "DE", ["w"], None, "go")
        ids.append(job.id)
    jobs, total = store.list(kind="diffusion-train")
    assert total == 2 and [j.id for j in jobs] == [ids[1], ids[0]]  # newest first
    assert store.list(limit=1, offset=1)[0][0].id == ids[1]
    with pytest.raises(InvalidRequest, match="state"):
        store.list(state="bogus")
    assert [j.id for j in store.history(since=T0 + timedelta(minutes=1))] == ids[1:]
    assert [j.id for j in store.history(until=T0 + timedelta(minutes=1))] == ids[:1]
    assert [j.id for j in store.history(kind="diffusion-sample")] == ids[2:]
    assert store.count_by_state() == {"running": 3}
