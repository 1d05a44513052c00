"""Emissions charged at forecast intensities are recomputed once actuals cover the run; each run's fifo
counterfactual is at full power, undoing a cap only where it was in force (applied or simulated, not a dry run)."""

from datetime import datetime, timezone

import pytest
from fakes import FakeClock
from worker_events import finished, totals

from policies.snapshot import FULL_POWER, CapStep
from scheduler.carbon.signal import IntensityReading, ZoneStatus, integrate_emissions
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from scheduler.store.job_state import RunStatus
from workers.events import CapMode, PowerCap
from workers.meters.recorder import PowerSample

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class SwitchableSignal:
    """Forecasts 200 g/kWh until actuals 'arrive', then reports an actual 300 g/kWh."""

    def __init__(self):
        self.actuals = False

    def reading(self, zone, at_s):
        if self.actuals:
            return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), 300.0, "em", "actual")
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), 200.0, "em", "forecast")

    def intensity_g_per_kwh(self, zone, at_s):
        return self.reading(zone, at_s).intensity_g_per_kwh

    def forecast(self, zone, horizon_s=None):
        return []

    def status(self, zone):
        return ZoneStatus(zone, "em", "ok", "", 0.0)


def test_forecast_based_emissions_are_finalised_with_actuals(upgraded_db_url, tmp_path):
    signal = SwitchableSignal()
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=lambda: T0, signal=signal)
    upgrade(daemon.engine)
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}))
    run = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    t0 = T0.timestamp()
    samples = (PowerSample(t0 + 1800, 100.0, 0.0, 1.8e6, 0.0), PowerSample(t0 + 3600, 100.0, 0.0, 3.6e6, 0.0))
    daemon.handle_event(finished(run.id, totals(3.6e6, 3600.0, t0), samples))
    energy = store.get(job.id).runs[0].energy
    assert (energy.emissions_g, energy.carbon_basis) == (200.0, "forecast")  # 1 kWh at 200 g/kWh

    assert daemon.finalise_emissions() == 0  # actuals not in yet: nothing changes
    signal.actuals = True
    assert daemon.finalise_emissions() == 1
    energy = store.get(job.id).runs[0].energy
    assert (energy.emissions_g, energy.carbon_basis, energy.intensity_g_per_kwh) == (300.0, "actual", 300.0)
    assert daemon.finalise_emissions() == 0  # final
    assert store.get(job.id).runs[0].status == RunStatus.SUCCEEDED.value
    daemon.engine.dispose()


class StepSignal(SwitchableSignal):
    """500 g/kWh in the first hour after T0, 100 g/kWh after; all actuals."""

    def reading(self, zone, at_s):
        value = 500.0 if at_s < T0.timestamp() + 3600 else 100.0
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), value, "em", "actual")


def run_an_hour_after_waiting_two(daemon, clock, cap_step, cap_mode=None):
    """A job submitted at T0 (home zone FR) waits two hours, then runs one hour in DE at ``cap_step`` (its cap
    applied as ``cap_mode`` says) drawing 1 kWh, half of it in each half hour; returns the energy points its
    emissions integrate."""
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}, zones=["FR", "DE"]))
    t0 = T0.timestamp()
    clock.advance(hours=2)
    run = store.start_run(job.id, "n", "DE", ["w"], 200.0, "carbon: started", cap_step)
    clock.advance(hours=1)
    power_cap = None if cap_mode is None else PowerCap(200.0, 200.0, cap_mode)
    daemon.handle_event(finished(
        run.id, totals(3.6e6, 3600.0, t0 + 7200),
        (PowerSample(t0 + 9000, 1000.0, 0.0, 1.8e6, 0.0), PowerSample(t0 + 10800, 1000.0, 0.0, 3.6e6, 0.0)),
        power_cap=power_cap))
    return job.id, [(t0 + 9000, 1.8e6), (t0 + 10800, 3.6e6)]


def test_each_run_records_its_fifo_counterfactual(upgraded_db_url, tmp_path):
    clock = FakeClock(T0)
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock, signal=StepSignal())
    upgrade(daemon.engine)
    job_id, _ = run_an_hour_after_waiting_two(daemon, clock, FULL_POWER)
    energy = daemon.store.get(job_id).runs[0].energy
    assert energy.emissions_g == 100.0
    # fifo: started at submission (t0) in the home zone FR, the same hour of energy at 500 g/kWh
    assert energy.counterfactual_emissions_g == 500.0
    daemon.engine.dispose()


class EarlyStepSignal(SwitchableSignal):
    """500 g/kWh for the first 40 minutes after T0, 100 g/kWh after: forecasts until actuals 'arrive', which
    are twice those."""

    def reading(self, zone, at_s):
        value = 500.0 if at_s < T0.timestamp() + 2400 else 100.0
        at = datetime.fromtimestamp(at_s, timezone.utc)
        if self.actuals:
            return IntensityReading(zone, at, 2 * value, "em", "actual")
        return IntensityReading(zone, at, value, "em", "forecast")


HALF_CAP = CapStep(0.5, 0.8, 0.5)  # at half the cap: 0.8x full speed at half the draw


def shifted_only(points, signal):
    """The counterfactual before caps counted: the run's own profile moved to submission, same energy."""
    return integrate_emissions([(t - 7200.0, e) for t, e in points], 3.6e6, signal, "FR", T0.timestamp()).emissions_g


# cap step, how the cap was applied, counterfactual on the forecast and on the actuals (g). Uncapped: the hour
# shifted to T0, 0.5 kWh at 500 and 0.5 kWh at 100 g/kWh. Capped and in force: at full power the work takes
# 0.8 h (48 min) and 1.6 kWh, 0.8 kWh in each 24 minutes, all before the step at 40 minutes: 1.6 kWh at 500
# g/kWh. Capped in a dry run: the GPU ran at full power anyway, so only the shift remains, as uncapped.
CASES = [(FULL_POWER, None, 300.0, 600.0), (HALF_CAP, CapMode.APPLIED, 800.0, 1600.0),
         (HALF_CAP, CapMode.SIMULATED, 800.0, 1600.0), (HALF_CAP, CapMode.DRY_RUN, 300.0, 600.0)]


@pytest.mark.parametrize("cap_step, cap_mode, forecast_g, actual_g", CASES,
                         ids=["uncapped", "half-cap-applied", "half-cap-simulated", "half-cap-dry-run"])
def test_the_counterfactual_is_at_full_power_and_finalisation_keeps_it(upgraded_db_url, tmp_path, cap_step, cap_mode,
                                                                          forecast_g, actual_g):
    clock, signal = FakeClock(T0), EarlyStepSignal()
    profiles = tmp_path / "profiles.csv"
    profiles.write_text("profile,cap_fraction,speed,power_fraction\n"
                        "diffusion-train,1,1,1\ndiffusion-train,0.5,0.8,0.5\n")
    settings = Settings(data_dir=tmp_path, database_url=upgraded_db_url, power_profiles=str(profiles))
    daemon = Daemon(settings, clock=clock, signal=signal)
    upgrade(daemon.engine)
    job_id, points = run_an_hour_after_waiting_two(daemon, clock, cap_step, cap_mode)
    run = daemon.store.get(job_id).runs[0]
    assert run.power_cap_mode == (cap_mode and cap_mode.value)
    energy = run.energy
    assert energy.emissions_g == pytest.approx(100.0)  # what it drew, where and when it ran
    assert energy.counterfactual_emissions_g == pytest.approx(forecast_g)
    credited = cap_mode in (CapMode.APPLIED, CapMode.SIMULATED)
    if not credited:
        assert energy.counterfactual_emissions_g == shifted_only(points, signal)  # exactly as before
    else:
        assert energy.counterfactual_emissions_g != pytest.approx(shifted_only(points, signal))
    daemon.engine.dispose()

    # A restarted daemon without the profiles finalises with the cap step the run recorded.
    restarted = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock, signal=signal)
    signal.actuals = True
    assert restarted.finalise_emissions() == 1
    energy = restarted.store.get(job_id).runs[0].energy
    assert (energy.emissions_g, energy.carbon_basis) == (pytest.approx(200.0), "actual")
    assert energy.counterfactual_emissions_g == pytest.approx(actual_g)
    if not credited:
        assert energy.counterfactual_emissions_g == shifted_only(points, signal)
    restarted.engine.dispose()


@pytest.mark.parametrize("cap_mode, first_speed", [(CapMode.APPLIED, 0.8), (CapMode.DRY_RUN, 1.0), (None, 1.0)],
                         ids=["applied", "dry-run", "never-reported"])
def test_fifo_runs_earlier_capped_runs_back_to_back_at_full_power(upgraded_db_url, tmp_path, cap_mode, first_speed):
    clock = FakeClock(T0)
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url), clock=clock, signal=StepSignal())
    upgrade(daemon.engine)
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}))
    clock.advance(hours=2)
    first = store.start_run(job.id, "n", "DE", ["w"], 200.0, "go", HALF_CAP)
    clock.advance(hours=1)
    store.finish_run(first.id, RunStatus.LOST, None, "node n died", None, None,
                     power_cap=None if cap_mode is None else PowerCap(200.0, 200.0, cap_mode))
    clock.advance(hours=1)
    second = store.start_run(job.id, "n2", "DE", ["w2"], None, "go again")
    place = store.counterfactual_placement(second.id)
    # a capped hour in force takes 48 minutes at full power, one capped in a dry run (or never said to be
    # capped) ran at full power already; the second run follows it at full power itself
    assert place.counterfactual_start_s == pytest.approx(T0.timestamp() + first_speed * 3600)
    assert (place.speed, place.power_fraction) == (1.0, 1.0)
    first_place = store.counterfactual_placement(first.id)
    assert (first_place.speed, first_place.power_fraction) == ((0.8, 0.5) if cap_mode is CapMode.APPLIED
                                                               else (1.0, 1.0))
    daemon.engine.dispose()
