"""Emissions charged at forecast intensities are recomputed once actuals cover the run."""

from datetime import datetime, timezone

from scheduler.carbon import IntensityReading, ZoneStatus
from scheduler.config import Settings
from scheduler.daemon import Daemon
from scheduler.db import upgrade
from scheduler.job_state import RunStatus

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


def test_forecast_based_emissions_are_finalised_with_actuals(db_url, tmp_path):
    signal = SwitchableSignal()
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=db_url), clock=lambda: T0, signal=signal)
    upgrade(daemon.engine)
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}))
    run = store.start_run(job.id, "n", "DE", ["w"], None, "go")
    t0 = T0.timestamp()
    samples = [[t0 + 1800, 100.0, 0.0, 1.8e6, 0.0], [t0 + 3600, 100.0, 0.0, 3.6e6, 0.0]]
    daemon.handle_event({"type": "finished", "run_id": run.id, "exit_status": "succeeded", "exit_code": 0,
                         "result": {}, "samples": samples,
                         "energy": {"gpu_energy_j": 3.6e6, "cpu_energy_j": 0.0, "gpu_method": "simulated",
                                    "cpu_method": "estimate", "avg_power_w": 1000.0, "peak_power_w": 1000.0,
                                    "duration_s": 3600.0, "started_s": t0}})
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


def test_each_run_records_its_fifo_counterfactual(db_url, tmp_path):
    now = [T0]
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=db_url), clock=lambda: now[0], signal=StepSignal())
    upgrade(daemon.engine)
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}, zones=["FR", "DE"]))
    t0 = T0.timestamp()
    # waited two hours for the clean period, then ran one hour drawing 1 kWh
    now[0] = datetime.fromtimestamp(t0 + 7200, timezone.utc)
    run = store.start_run(job.id, "n", "DE", ["w"], None, "carbon: started")
    now[0] = datetime.fromtimestamp(t0 + 10800, timezone.utc)
    daemon.handle_event({"type": "finished", "run_id": run.id, "exit_status": "succeeded", "exit_code": 0,
                         "result": {}, "samples": [[t0 + 9000, 1000.0, 0.0, 1.8e6, 0.0],
                                                    [t0 + 10800, 1000.0, 0.0, 3.6e6, 0.0]],
                         "energy": {"gpu_energy_j": 3.6e6, "cpu_energy_j": 0.0, "gpu_method": "simulated",
                                    "cpu_method": "estimate", "avg_power_w": 1000.0, "peak_power_w": 1000.0,
                                    "duration_s": 3600.0, "started_s": t0 + 7200}})
    energy = store.get(job.id).runs[0].energy
    assert energy.emissions_g == 100.0
    # fifo: started at submission (t0) in the home zone FR, the same hour of energy at 500 g/kWh
    assert energy.counterfactual_emissions_g == 500.0
    daemon.engine.dispose()
