"""Typed worker events (workers.events) for tests that drive the daemon's EventRecorder without Ray."""

from __future__ import annotations

from workers.events import ExitStatus, Finished, PowerCap
from workers.meters.recorder import EnergyTotals, PowerSample


def totals(gpu_energy_j: float, duration_s: float, started_s: float, *, cpu_energy_j: float = 0.0,
           gpu_method: str = "simulated", cpu_method: str = "estimate") -> EnergyTotals:
    """A run's energy totals as its worker reports them, drawing evenly over ``duration_s``."""
    energy_j = gpu_energy_j + cpu_energy_j
    power_w = energy_j / duration_s if duration_s > 0 else 0.0
    return EnergyTotals(gpu_energy_j=gpu_energy_j, cpu_energy_j=cpu_energy_j, gpu_method=gpu_method,
                        cpu_method=cpu_method, avg_power_w=power_w, peak_power_w=power_w, duration_s=duration_s,
                        started_s=started_s, ended_s=started_s + duration_s)


def samples(started_s: float, gpu_power_w: float, cpu_power_w: float, times_s: list[float]) -> tuple:
    """Power samples at ``started_s + t`` for each t, at constant draws, energies cumulative from the start."""
    return tuple(PowerSample(started_s + t, gpu_power_w, cpu_power_w, gpu_power_w * t, cpu_power_w * t)
                 for t in times_s)


def finished(run_id: int, energy: EnergyTotals | None, samples: tuple = (), *, exit_status: str = "succeeded",
             result: dict | None = None, power_cap: PowerCap | None = None) -> Finished:
    """The ``Finished`` event of ``run_id`` as a worker on worker id ``w`` sends it."""
    return Finished(job_id="job", run_id=run_id, worker_id="w", at=energy.ended_s if energy else 0.0,
                    exit_status=ExitStatus(exit_status), exit_code=0, result=result,
                    energy=energy, samples=samples, power_cap=power_cap)
