"""Savings we can defend: a run's saving against fifo credits its power cap only when the cap was in force.

The case that used to report a phantom saving: a power profile, a GPU capped in the default dry run (nothing
set, so it ran uncapped), at its submission time and in its home zone, on a flat 300 g/kWh grid, drawing 400 W
for an hour. It emitted 120 g and fifo would have emitted the same 120 g; it used to report 192 g for fifo
(a 37 % saving). The run goes through the real parts below the hardware: the cap through ``cap_run`` and the
energy through the NVML meter and the recorder, both on the fake NVML; the daemon records the worker's
``Finished`` event, and the REST API serves the job and the history.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock
from fastapi.testclient import TestClient

from policies.snapshot import CapStep
from scheduler.api.app import create_app
from scheduler.carbon.signal import IntensityReading, ZoneStatus
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade
from workers.events import CapMode, ExitStatus, Finished
from workers.meters.base import EnergyMeter, EnergyReading
from workers.meters.fake_nvml import FakeGpu, FakeNvml, ManualClock
from workers.meters.nvml import NvmlGpuMeter
from workers.meters.recorder import EnergyRecorder
from workers.power_cap import cap_run

T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
HOUR_S = 3600.0
#: The power profile's half cap: 0.8 x full speed at half the draw (the issue's case: 192 g = 120 g x 0.8 / 0.5).
HALF_CAP = CapStep(0.5, 0.8, 0.5)
PROFILES = "profile,cap_fraction,speed,power_fraction\ndiffusion-train,1,1,1\ndiffusion-train,0.5,0.8,0.5\n"


class FlatSignal:
    """An actual 300 g/kWh everywhere, always."""

    def reading(self, zone, at_s):
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), 300.0, "flat", "actual")

    def intensity_g_per_kwh(self, zone, at_s):
        return 300.0

    def forecast(self, zone, horizon_s=None):
        return []

    def status(self, zone):
        return ZoneStatus(zone, "flat", "ok", "", 0.0)


class SteadyCpu(EnergyMeter):
    """A CPU drawing ``power_w`` on the manual clock (the CPU is hardware: faked, like the GPU)."""

    method = "rapl"

    def __init__(self, power_w: float, clock: ManualClock):
        self.power_w, self._clock, self._start_s = power_w, clock, clock()

    def read(self) -> EnergyReading:
        now = self._clock()
        return EnergyReading(timestamp_s=now, energy_j=self.power_w * (now - self._start_s), power_w=self.power_w)


def metered_hour(gpu_w: float, cpu_w: float, dry_run: bool, cap_w: float = 200.0):
    """A worker's view of one hour on a physical GPU capped at ``cap_w``: how the cap was applied, the energy
    totals and the power samples (one every 10 minutes)."""
    clock = ManualClock(T0.timestamp())
    nvml = FakeNvml([FakeGpu(power_steps_w=((0.0, gpu_w),))], clock)
    power_cap, capper = cap_run([0], cap_w, logical=False, dry_run=dry_run, nvml=nvml)
    recorder = EnergyRecorder(NvmlGpuMeter([0], nvml=nvml, clock=clock), SteadyCpu(cpu_w, clock),
                              interval_s=HOUR_S, clock=clock)
    recorder.start()
    for _ in range(6):
        clock.advance(600.0)
        recorder.poll()
    totals = recorder.stop()
    samples = tuple(recorder.drain_samples())
    if capper is not None:
        capper.restore()
    return power_cap, totals, samples


@pytest.fixture
def daemon(upgraded_db_url, tmp_path):
    profiles = tmp_path / "profiles.csv"
    profiles.write_text(PROFILES)
    daemon = Daemon(Settings(data_dir=tmp_path, database_url=upgraded_db_url, power_profiles=str(profiles)),
                    clock=FakeClock(T0), signal=FlatSignal())
    upgrade(daemon.engine)
    yield daemon
    daemon.engine.dispose()


def run_capped_hour(daemon, gpu_w: float, cpu_w: float, dry_run: bool) -> tuple[dict, dict]:
    """Submit a training job at T0 in DE and run it there at once at the half cap for the metered hour; returns
    its job view and its history row as the REST API serves them."""
    store = daemon.store
    job = store.submit(store.validate("diffusion-train", {"steps": 5}, zones=["DE"]))
    run = store.start_run(job.id, "node-1", "DE", ["gpu-0"], 200.0, "running in zone DE", HALF_CAP)
    power_cap, totals, samples = metered_hour(gpu_w, cpu_w, dry_run)
    daemon.clock.now = T0 + timedelta(seconds=HOUR_S)
    assert daemon.handle_event(Finished(job_id=job.id, run_id=run.id, worker_id="gpu-0", at=totals.ended_s,
                                        exit_status=ExitStatus.SUCCEEDED, exit_code=0, result={}, energy=totals,
                                        samples=samples, power_cap=power_cap))
    api = TestClient(create_app(daemon),
                     headers={"Authorization": f"Bearer {daemon.auth.create_token('root', 'admin').secret}"})
    view = api.get(f"/v1/jobs/{job.id}").json()
    [row] = api.get("/v1/history").json()["jobs"]
    return view, row


def test_a_dry_run_cap_reports_no_saving(daemon):
    view, row = run_capped_hour(daemon, gpu_w=400.0, cpu_w=0.0, dry_run=True)
    [run] = view["runs"]
    assert (run["power_cap_w"], run["power_cap_mode"], run["power_cap_limit_w"]) == (200.0, "dry-run", 200.0)
    energy = view["energy"]
    assert energy["gpu_method"] == "nvml-counter"
    assert energy["emissions_g"] == pytest.approx(120.0)  # 0.4 kWh at 300 g/kWh
    # It ran uncapped where and when fifo would have run it: fifo emits exactly what it emitted (not 192 g).
    assert energy["counterfactual_emissions_g"] == energy["emissions_g"]
    assert (energy["counterfactual_basis"], energy["counterfactual_model"]) == ("modelled", "time-shift")
    assert row["saving_g"] == 0.0 and row["saving_basis"] == "modelled"
    assert row["power_cap_modes"] == ["dry-run"]


def test_an_applied_cap_is_still_credited_on_its_gpu_energy_only(daemon):
    # Under the applied cap the GPU drew 200 W, the CPU 50 W: 0.25 kWh, 75 g.
    view, row = run_capped_hour(daemon, gpu_w=200.0, cpu_w=50.0, dry_run=False)
    assert view["runs"][0]["power_cap_mode"] == "applied"
    energy = view["energy"]
    assert energy["emissions_g"] == pytest.approx(75.0)
    # At full power the GPU does the work in 0.8 h at twice the draw: 0.2 kWh x 0.8 / 0.5 = 0.32 kWh; the CPU's
    # 0.05 kWh is the same work's and is not rescaled by the GPU's profile: 0.37 kWh at 300 g/kWh.
    assert energy["counterfactual_emissions_g"] == pytest.approx(111.0)
    assert energy["counterfactual_model"] == "time-shift+power-profile"
    assert row["saving_g"] == pytest.approx(36.0) and row["saving_basis"] == "modelled"
    assert row["power_cap_modes"] == ["applied"]


@pytest.mark.parametrize("dry_run, mode", [(True, CapMode.DRY_RUN), (False, CapMode.APPLIED)])
def test_cap_run_says_how_a_physical_cap_was_applied(dry_run, mode):
    nvml = FakeNvml([FakeGpu()], ManualClock())
    power_cap, capper = cap_run([0], 50.0, logical=False, dry_run=dry_run, nvml=nvml)
    # clamped to the GPU's 100 W minimum, and set only when not a dry run
    assert (power_cap.requested_w, power_cap.limit_w, power_cap.mode) == (50.0, 100.0, mode)
    assert nvml.set_calls == ([] if dry_run else [(0, 100_000)])
    capper.restore()


def test_cap_run_on_logical_gpus_is_simulated_and_without_a_cap_says_none():
    power_cap, capper = cap_run([0], 150.0, logical=True, dry_run=True)
    assert (power_cap.limit_w, power_cap.mode, capper) == (150.0, CapMode.SIMULATED, None)
    assert power_cap.mode.in_force and not CapMode.DRY_RUN.in_force
    assert cap_run([0], None, logical=False, dry_run=False) == (None, None)
