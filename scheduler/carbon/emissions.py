"""The emissions the daemon charges each finished run, and the fifo counterfactual it is compared with.

A run is charged when it finishes, at the intensities its carbon signal gives then; where that used forecast
values, ``finalise`` charges it again once actuals cover the run (the daemon does so after each carbon refresh).
"""

from __future__ import annotations

from typing import Any

from scheduler.carbon.signal import CarbonSignal, Emissions, integrate_emissions
from scheduler.clock import to_unix_s
from scheduler.store.models import RunEnergy
from scheduler.store.jobs import JobStore


class RunEmissions:
    """Emissions and fifo counterfactuals of runs in ``store``, charged at ``signal``.

    ``default_zone``: the counterfactual's zone for a job that named none.
    """

    def __init__(self, store: JobStore, signal: CarbonSignal, default_zone: str):
        self.store = store
        self.signal = signal
        self.default_zone = default_zone

    def energy_record(self, run_id: int, energy: dict[str, Any],
                      final_samples: list[list[float]]) -> RunEnergy | None:
        """The energy row of a run that has just finished, with its emissions and counterfactual; None when
        its worker reported no energy.

        ``energy``: the worker's totals (J, W, s); ``final_samples``: the samples that came with the finish
        event, which the store may hold only in part (it thins them).
        """
        if not energy:
            return None
        points = sorted(set(self._stored_points(run_id)) | {(s[0], s[3] + s[4]) for s in final_samples})
        total_j = float(energy.get("gpu_energy_j", 0.0)) + float(energy.get("cpu_energy_j", 0.0))
        emissions, counterfactual_g = self._charge(run_id, points, total_j, energy.get("started_s"))
        return RunEnergy(
            gpu_energy_j=float(energy.get("gpu_energy_j", 0.0)), cpu_energy_j=float(energy.get("cpu_energy_j", 0.0)),
            gpu_method=energy.get("gpu_method", "unknown"), cpu_method=energy.get("cpu_method", "unknown"),
            avg_power_w=float(energy.get("avg_power_w", 0.0)), peak_power_w=float(energy.get("peak_power_w", 0.0)),
            duration_s=float(energy.get("duration_s", 0.0)), intensity_g_per_kwh=emissions.intensity_g_per_kwh,
            emissions_g=emissions.emissions_g, carbon_source=emissions.source, carbon_basis=emissions.basis,
            counterfactual_emissions_g=counterfactual_g,
        )

    def finalise(self) -> int:
        """Recompute emissions of runs charged at forecast values once actuals cover them; returns how many."""
        changed = 0
        for energy, run in self.store.runs_with_basis("forecast"):
            emissions, counterfactual_g = self._charge(run.id, self._stored_points(run.id),
                                                       energy.gpu_energy_j + energy.cpu_energy_j)
            if emissions.basis != "forecast":
                self.store.update_emissions(energy.id, emissions, counterfactual_g)
                changed += 1
        return changed

    def _charge(self, run_id: int, points: list[tuple[float, float]], total_j: float,
                started_s: float | None = None) -> tuple[Emissions, float]:
        """A run's emissions, and its fifo counterfactual's (g), from its cumulative energy ``points``
        ``(timestamp_s, energy_j)`` and its total energy (J).

        The counterfactual is what the run would have emitted had its job started at submission in its home
        zone (its first allowed zone, else the default zone), its runs back to back, at full power, charged at
        the intensities that occurred there and then. A run capped to a step of its power profile (``speed`` x
        full speed at ``power_fraction`` x full power) would have done the same work at full power in ``speed``
        x the time at ``1 / power_fraction`` x the draw: its energy profile is compressed by ``speed`` about its
        start, scaled by ``speed / power_fraction``, and shifted. An uncapped run's profile is only shifted.
        """
        place = self.store.counterfactual_placement(run_id)
        started_s = float(started_s or place.started_s)
        emissions = integrate_emissions(points, total_j, self.signal, place.zone, started_s)
        shift_s = place.counterfactual_start_s - started_s
        # The compression is written as a correction to the shift, so that an uncapped run's figure is bit for
        # bit what the shift alone gives (x - 0.0 and x * 1.0 are exact).
        saved = 1.0 - place.speed
        scale = place.speed / place.power_fraction
        full_power = [(t + shift_s - (t - started_s) * saved, e * scale) for t, e in points]
        counterfactual = integrate_emissions(full_power, total_j * scale, self.signal,
                                             place.home_zone or self.default_zone, place.counterfactual_start_s)
        return emissions, counterfactual.emissions_g

    def _stored_points(self, run_id: int) -> list[tuple[float, float]]:
        """The run's stored samples as cumulative energy points ``(timestamp_s, gpu + cpu energy_j)``."""
        return [(to_unix_s(s.at), s.gpu_energy_j + s.cpu_energy_j) for s in self.store.stored_samples(run_id)]
