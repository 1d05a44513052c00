"""The daemon's scheduling round with the carbon-aware policy: snapshot from the database, decisions applied.

No Ray here: the inventory is set by hand and no job is started (each case makes the policy wait).
"""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from policies.snapshot import FULL_POWER, CapStep
from scheduler.carbon import IntensityReading, SignalForecast, ZoneStatus
from scheduler.config import Settings
from scheduler.daemon import Daemon
from scheduler.db import upgrade
from scheduler.estimates import NOMINAL_S_PER_UNIT, NOMINAL_STARTUP_S, SAFETY_FACTOR, FinishedRun, WorkEstimator

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


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
    daemon = Daemon(settings, clock=lambda: NOW, signal=DipSignal(NOW.timestamp()))
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
        SAFETY_FACTOR * (NOMINAL_STARTUP_S + 100 * NOMINAL_S_PER_UNIT["diffusion-train"]))
    runs = [FinishedRun("diffusion-train", {"steps": 100}, {"steps_this_run": 100}, NOMINAL_STARTUP_S + 50.0,
                        gpu_energy_j=200.0 * (NOMINAL_STARTUP_S + 50.0), gpus=1)] * 3
    learned = WorkEstimator(runs)
    assert learned.duration_s("diffusion-train", {"steps": 200}) == pytest.approx(
        SAFETY_FACTOR * (NOMINAL_STARTUP_S + 100.0))
    assert learned.duration_s("diffusion-train", {"steps": 200}, {"step": 150, "total": 200}) == pytest.approx(
        SAFETY_FACTOR * (NOMINAL_STARTUP_S + 25.0))
    # a job that has run predicts itself: 150 steps in two runs of 6 s start-up + 150 s of work -> 1 s a step
    own = (2 * NOMINAL_STARTUP_S + 150.0, 2)
    assert learned.duration_s("diffusion-train", {"steps": 200}, {"step": 150, "total": 200}, own) == pytest.approx(
        SAFETY_FACTOR * (NOMINAL_STARTUP_S + 50.0))
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
        assert daemon._cap_step("diffusion-train", 0.5) == CapStep(0.5, 0.8, 0.5)
        assert daemon._cap_step("diffusion-sample", 0.5) == FULL_POWER
    finally:
        daemon.engine.dispose()
