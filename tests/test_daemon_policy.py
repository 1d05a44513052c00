"""The daemon's scheduling round with the carbon-aware policy: snapshot from the database, decisions applied.

No Ray here: the inventory is set by hand and runs are opened and closed through the store; where a decision
reaches the controller, a recording double stands in for it.
"""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeClock, RecordingController
from policies.decisions import Suspend
from policies.snapshot import FULL_POWER, CapStep, RunningJob
from scheduler.carbon.signal import IntensityReading, SignalForecast, ZoneStatus
from scheduler.config import Settings
from scheduler.core.ledger import cap_step
from scheduler.errors import PolicyViolation
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from scheduler.daemon.estimates import SAFETY_FACTOR, FinishedRun, WorkEstimator
from scheduler.store.job_state import RunStatus
from workers.kinds import builtin_kinds

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
#: What estimates ask before any run was seen: the training kind's start-up and nominal seconds a step.
TRAIN_KIND = builtin_kinds().get("diffusion-train")
STARTUP_S, NOMINAL_S_PER_STEP = TRAIN_KIND.startup_s, TRAIN_KIND.nominal_s_per_unit({})


class DipSignal:
    """500 g/kWh now; 50 g/kWh from two hours ahead on (a forecast)."""

    def __init__(self, now_s):
        self.now_s = now_s

    def intensity_g_per_kwh(self, zone, at_s):
        return 500.0 if at_s < self.now_s + 7200 else 50.0

    def reading(self, zone, at_s):
        basis = "actual" if at_s <= self.now_s else "forecast"
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc),
                                self.intensity_g_per_kwh(zone, at_s), "test", basis)

    def forecast(self, zone, horizon_s=None):
        horizon_s = 48 * 3600 if horizon_s is None else horizon_s
        return [self.reading(zone, self.now_s + k * 3600.0) for k in range(int(horizon_s // 3600) + 1)]

    def status(self, zone):
        return ZoneStatus(zone, "test", "ok", "", 0.0)


@pytest.fixture
def daemon(tmp_path):
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"),
                       policy="carbon-aware")
    daemon = Daemon(settings, clock=FakeClock(NOW), signal=DipSignal(NOW.timestamp()))
    upgrade(daemon.engine)
    daemon._set_inventory([{"worker_id": "w0", "node_id": "node-a", "zone": "DE", "max_power_w": 400.0}])
    yield daemon
    daemon.engine.dispose()


def submit(daemon, **kwargs):
    store = daemon.store
    return store.submit(store.validate("diffusion-train", {"steps": 100}, **kwargs))


def test_a_job_with_slack_is_deferred_to_the_cleaner_window_with_a_reason(daemon):
    job = submit(daemon, deadline=NOW + timedelta(hours=6))
    daemon.schedule()
    job = daemon.store.get(job.id)
    assert job.state == "deferred"
    assert job.reason.startswith("carbon: waiting 2.0 h to start in zone DE")
    assert "next look at 14:00 UTC" in job.reason


def test_a_job_without_a_deadline_may_not_wait_and_user_constraints_come_first(daemon):
    # no deadline: no flexibility (starts at once) -- shown here by the policy's reason on a full cluster
    daemon._set_inventory([{"worker_id": "w0", "node_id": "node-a", "zone": "DE", "busy_job": "x",
                            "max_power_w": 400.0}])
    rigid = submit(daemon)
    later = submit(daemon, not_before=NOW + timedelta(hours=1))
    daemon.schedule()
    rigid, later = daemon.store.get(rigid.id), daemon.store.get(later.id)
    assert rigid.state == "pending" and "zone DE" in rigid.reason
    assert later.state == "pending" and later.reason == "waiting for its begin time 2026-03-01 13:00 UTC"


def test_dependencies_are_waited_for_by_name(daemon):
    first = submit(daemon, deadline=NOW + timedelta(hours=6))
    second = daemon.store.submit(daemon.store.validate(
        "diffusion-sample", {"checkpoint": f"job:{first.id}"}, depends_on=[first.id]))
    daemon.schedule()
    assert daemon.store.get(second.id).reason == f"waiting for job {first.id} (pending)"
    daemon.schedule()  # the first job is deferred by now
    assert daemon.store.get(second.id).reason == f"waiting for job {first.id} (deferred)"
    daemon.store.request_cancel(first.id)
    daemon.schedule()
    assert daemon.store.get(second.id).reason == (
        f"waiting for job {first.id} (cancelled): a dependency ended without succeeding and can never be met; "
        "cancel this job")


def test_only_training_can_be_interruptible(daemon):
    from scheduler.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as info:
        daemon.store.validate("diffusion-sample", {"checkpoint": "/x"}, interruptible=True)
    assert info.value.field == "interruptible"


def test_estimates_learn_from_finished_runs_and_count_what_remains():
    nominal = WorkEstimator([])
    assert nominal.duration_s("diffusion-train", {"steps": 100}) == pytest.approx(
        SAFETY_FACTOR * (STARTUP_S + 100 * NOMINAL_S_PER_STEP))
    runs = [FinishedRun("diffusion-train", {"steps": 100}, {"steps_this_run": 100}, STARTUP_S + 50.0,
                        gpu_energy_j=200.0 * (STARTUP_S + 50.0), gpus=1)] * 3
    learned = WorkEstimator(runs)
    assert learned.duration_s("diffusion-train", {"steps": 200}) == pytest.approx(
        SAFETY_FACTOR * (STARTUP_S + 100.0))
    assert learned.duration_s("diffusion-train", {"steps": 200}, {"step": 150, "total": 200}) == pytest.approx(
        SAFETY_FACTOR * (STARTUP_S + 25.0))
    # a job that has run predicts itself: 150 steps in two runs of 6 s start-up + 150 s of work -> 1 s a step
    own = (2 * STARTUP_S + 150.0, 2)
    assert learned.duration_s("diffusion-train", {"steps": 200}, {"step": 150, "total": 200}, own) == pytest.approx(
        SAFETY_FACTOR * (STARTUP_S + 50.0))
    assert learned.power_w("diffusion-train") == pytest.approx(200.0)
    assert learned.duration_s("shell", {}) is None


def test_signal_forecast_gives_policies_history_and_forecast_not_the_provider():
    now_s = NOW.timestamp()
    forecast = SignalForecast(DipSignal(now_s), now_s)
    times, values = forecast.forecast("DE", now_s + 1800, now_s + 4 * 3600)
    assert times[0] == now_s + 1800 and list(values) == [500.0, 500.0, 50.0, 50.0]
    assert forecast.intensity("DE", now_s + 10 * 3600) == 500.0  # clipped to now: no peeking
    times, values = forecast.history("DE", now_s - 3 * 3600, now_s + 3600)
    assert times[-1] <= now_s and set(values) == {500.0}


class FlatSignal(DipSignal):
    def intensity_g_per_kwh(self, zone, at_s):
        return 300.0


def test_a_power_profile_for_a_kind_lets_the_policy_cap_its_jobs(tmp_path):
    profiles = tmp_path / "profiles.csv"
    profiles.write_text("profile,cap_fraction,speed,power_fraction\n"
                        "diffusion-train,1,1,1\ndiffusion-train,0.5,0.8,0.5\n")
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"),
                       policy="carbon-aware", power_profiles=str(profiles))
    daemon = Daemon(settings, clock=lambda: NOW, signal=FlatSignal(NOW.timestamp()))
    upgrade(daemon.engine)
    daemon._set_inventory([{"worker_id": "w0", "node_id": "node-a", "zone": "DE", "max_power_w": 400.0}])
    try:
        submit(daemon, deadline=NOW + timedelta(hours=6))
        (decision,) = daemon.policy.decide(daemon.snapshot())
        # at half power it runs at 0.8x speed for 0.5x the draw: 37.5 % less energy, and the deadline holds
        assert decision.cap_fraction == 0.5 and decision.power_cap_w == 200.0
        assert "50% power cap" in decision.reason
        (job,) = daemon.snapshot().waiting
        assert cap_step(job, 0.5, "carbon-aware") == CapStep(0.5, 0.8, 0.5)
        with pytest.raises(PolicyViolation, match="chose cap 0.7 for .*, which its profile does not list"):
            cap_step(job, 0.7, "carbon-aware")
    finally:
        daemon.engine.dispose()



def gpu(worker_id, busy_job=None):
    return {"worker_id": worker_id, "node_id": "node-a", "zone": "DE", "busy_job": busy_job, "max_power_w": 400.0}


def run_on(daemon, job, worker_id, step=FULL_POWER):
    return daemon.store.start_run(job.id, "node-a", "DE", [worker_id], None, "running in zone DE", step)


def test_the_snapshot_lists_running_jobs_with_draw_at_their_cap_work_left_and_gpus_read_only_when_looked_at(
        daemon, monkeypatch):
    long = submit(daemon, deadline=NOW + timedelta(days=1), interruptible=True)
    rigid = daemon.store.submit(daemon.store.validate("diffusion-train", {"steps": 10}))
    gone = submit(daemon)  # its run is open in the database, but the controller has let its GPU go
    run = run_on(daemon, long, "w0", CapStep(0.5, 0.8, 0.5))
    run_on(daemon, rigid, "w1")
    run_on(daemon, gone, "w2")
    daemon.store.add_progress(run.id, {"step": 40, "total": 100}, [])
    daemon._set_inventory([gpu("w0", long.id), gpu("w1", rigid.id), gpu("w2")])
    daemon.clock.advance(seconds=16)
    reads = []
    monkeypatch.setattr(daemon.store, "running_jobs", lambda now, read=daemon.store.running_jobs: reads.append(now)
                        or read(now))

    running = daemon.snapshot().running
    assert reads == []  # most ticks never look
    by_id = {r.job_id: r for r in running}
    assert reads == [NOW + timedelta(seconds=16)]
    # 300 W a GPU (nothing learned yet) at the 50 % cap's half draw; 40 steps in its 16 s (6 s of start-up) give
    # it 0.25 s a step for the 60 left; the rigid job has not reported progress: 10 steps at the nominal rate.
    # Each is expected to end when that work is done (at full speed)
    now_s = (NOW + timedelta(seconds=16)).timestamp()
    long_left_s = SAFETY_FACTOR * (STARTUP_S + 60 * 0.25)
    rigid_left_s = SAFETY_FACTOR * (STARTUP_S + 10 * NOMINAL_S_PER_STEP)
    assert by_id == {
        long.id: RunningJob(long.id, "DE", "node-a", 1, 150.0, True, (NOW + timedelta(days=1)).timestamp(),
                            pytest.approx(long_left_s), ("w0",), end_s=pytest.approx(now_s + long_left_s)),
        rigid.id: RunningJob(rigid.id, "DE", "node-a", 1, 300.0, False, None, pytest.approx(rigid_left_s), ("w1",),
                             end_s=pytest.approx(now_s + rigid_left_s)),
    }
    assert len(running) == 2 and reads == [NOW + timedelta(seconds=16)]  # read once


def test_a_due_job_suspends_an_interruptible_one_and_starts_once_it_has_stopped_at_a_checkpoint(daemon):
    daemon.controller = controller = RecordingController()
    long = submit(daemon, deadline=NOW + timedelta(days=1), interruptible=True)
    run = run_on(daemon, long, "w0")
    daemon._set_inventory([gpu("w0", long.id)])
    spec = {"steps": 100}
    expected_s = daemon.recent_runs.estimator().duration_s("diffusion-train", spec)
    due = submit(daemon, deadline=NOW + timedelta(seconds=expected_s))  # no slack: it must start now

    daemon.schedule()
    assert controller.calls == [("cancel_job", long.id, "suspended")]
    why = f"suspended at a checkpoint to make room for job {due.id}, which is due; it resumes later"
    assert daemon.store.get(long.id).reason == "stopping: " + why
    # the GPU is not free until the long job has checkpointed and exited: the due job is not sent to it yet
    due_now = daemon.store.get(due.id)
    assert (due_now.state, due_now.reason, due_now.runs) == (
        "pending", f"waiting for job {long.id} to stop at a checkpoint", [])

    daemon.store.finish_run(run.id, RunStatus.SUSPENDED, 0, None, None, None)
    assert (daemon.store.get(long.id).state, daemon.store.get(long.id).reason) == ("suspended", why)
    daemon._set_inventory([gpu("w0")])
    daemon.schedule()  # the tick the long job's finish triggers
    assert controller.calls[1][:3] == ("start_job", due.id, daemon.store.get(due.id).runs[0].id)
    assert daemon.store.get(due.id).state == "running"
    assert daemon.store.get(long.id).state == "suspended"


def test_a_power_budget_counts_the_running_jobs_draw_and_holds_back_what_would_exceed_it(tmp_path):
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"), policy="fifo",
                       power_budget_w=450.0)
    daemon = Daemon(settings, clock=FakeClock(NOW), signal=DipSignal(NOW.timestamp()))
    upgrade(daemon.engine)
    daemon.controller = controller = RecordingController()
    first = submit(daemon)
    run_on(daemon, first, "w0")
    daemon._set_inventory([gpu("w0", first.id), gpu("w1")])
    second = submit(daemon)

    snapshot = daemon.snapshot()
    assert (snapshot.power_budget_w, snapshot.power_draw_w) == (450.0, 300.0)  # 300 W a GPU: nothing learned yet
    daemon.schedule()
    assert controller.calls == []  # a free GPU, but 300 W more would make 600 W
    assert daemon.store.get(second.id).reason.startswith("waiting for power: the budget has 150 W left")
    daemon.engine.dispose()


@pytest.mark.parametrize("environ,message", [
    ({"WATTSCHED_POWER_BUDGET_W": "-5"}, "WATTSCHED_POWER_BUDGET_W=-5 must be >= 0 (0: no limit)"),
    ({"WATTSCHED_POWER_BUDGET_W": "lots"}, "WATTSCHED_POWER_BUDGET_W='lots' is not a valid float"),
])
def test_a_bad_power_budget_is_refused_naming_the_variable(environ, message):
    from scheduler.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    assert str(raised.value) == message


class SuspendEverything:
    """A policy that asks to suspend every running job, whatever it is."""

    name = "suspend-everything"

    def decide(self, snapshot):
        return [Suspend(r.job_id, "because") for r in snapshot.running]


def test_only_running_interruptible_jobs_are_suspended_whatever_the_policy_asks(daemon, caplog):
    daemon.controller = controller = RecordingController()
    daemon.policy = SuspendEverything()
    rigid, flexible = submit(daemon), submit(daemon, deadline=NOW + timedelta(days=1), interruptible=True)
    run_on(daemon, rigid, "w0")
    run_on(daemon, flexible, "w1")
    daemon._set_inventory([gpu("w0", rigid.id), gpu("w1", flexible.id)])
    daemon.schedule()
    assert controller.calls == [("cancel_job", flexible.id, "suspended")]
    assert f"suspended {rigid.id}, which is not a running interruptible job" in caplog.text
    assert daemon.store.get(rigid.id).reason == "running in zone DE"
