"""The emissions the daemon charges each finished run, and the fifo counterfactual it is compared with.

A run is charged when it finishes, at the intensities its carbon signal gives then; where that used forecast
values, ``finalise`` charges it again once actuals cover the run (the daemon does so after each carbon refresh).

The counterfactual is a model, not a measurement: the run's own measured (or simulated) energy profile, moved
to where and when fifo would have run it, and, only when its power cap was in force, its GPU energy rescaled to
full power by the power profile. Views label it ``modelled``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from scheduler.carbon.signal import CarbonSignal, Emissions, integrate_emissions
from scheduler.clock import to_unix_s
from scheduler.store.jobs import CounterfactualPlacement, JobStore
from scheduler.store.models import RunEnergy
from workers.events import PowerCap
from workers.meters.recorder import EnergyTotals, PowerSample

#: A cumulative energy point of a run: ``(timestamp_s, gpu_energy_j, cpu_energy_j)``.
EnergyPoint = tuple[float, float, float]


class RunEmissions:
    """Emissions and fifo counterfactuals of runs in ``store``, charged at ``signal``.

    ``default_zone``: the counterfactual's zone for a job that named none.
    """

    def __init__(self, store: JobStore, signal: CarbonSignal, default_zone: str):
        self.store = store
        self.signal = signal
        self.default_zone = default_zone

    def energy_record(self, run_id: int, energy: EnergyTotals | None, final_samples: Sequence[PowerSample],
                      power_cap: PowerCap | None) -> RunEnergy | None:
        """The energy row of a run that has just finished, with its emissions and counterfactual; None when
        its worker reported no energy.

        ``energy``: the worker's totals; ``final_samples``: the samples that came with the finish event, which
        the store may hold only in part (it thins them); ``power_cap``: how the run's cap was applied (None: no
        cap asked), which the store has not recorded yet.
        """
        if energy is None:
            return None
        points = sorted(set(self._stored_points(run_id))
                        | {(s.timestamp_s, s.gpu_energy_j, s.cpu_energy_j) for s in final_samples})
        place = replace(self.store.counterfactual_placement(run_id),
                        power_cap_mode=power_cap.mode.value if power_cap else None)
        emissions, counterfactual_g = self._charge(place, points, energy.gpu_energy_j, energy.cpu_energy_j,
                                                   energy.started_s)
        return RunEnergy(
            gpu_energy_j=energy.gpu_energy_j, cpu_energy_j=energy.cpu_energy_j, gpu_method=energy.gpu_method,
            cpu_method=energy.cpu_method, avg_power_w=energy.avg_power_w, peak_power_w=energy.peak_power_w,
            duration_s=energy.duration_s, intensity_g_per_kwh=emissions.intensity_g_per_kwh,
            emissions_g=emissions.emissions_g, carbon_source=emissions.source, carbon_basis=emissions.basis,
            counterfactual_emissions_g=counterfactual_g,
        )

    def finalise(self) -> int:
        """Recompute emissions of runs charged at forecast values once actuals cover them; returns how many."""
        changed = 0
        for energy, run in self.store.runs_with_basis("forecast"):
            emissions, counterfactual_g = self._charge(self.store.counterfactual_placement(run.id),
                                                       self._stored_points(run.id), energy.gpu_energy_j,
                                                       energy.cpu_energy_j)
            if emissions.basis != "forecast":
                self.store.update_emissions(energy.id, emissions, counterfactual_g)
                changed += 1
        return changed

    def _charge(self, place: CounterfactualPlacement, points: list[EnergyPoint], gpu_j: float, cpu_j: float,
                started_s: float | None = None) -> tuple[Emissions, float]:
        """A run's emissions, and its fifo counterfactual's (g), from its cumulative energy ``points`` and its
        total GPU and CPU energy (J).

        The counterfactual is what the run would have emitted had its job started at submission in its home
        zone (its first allowed zone, else the default zone), its runs back to back, at full power, charged at
        the intensities that occurred there and then. A run whose cap was in force at a step of its power
        profile (``speed`` x full speed at ``power_fraction`` x full GPU power) would have done the same work at
        full power in ``speed`` x the time: its energy profile is compressed by ``speed`` about its start and
        shifted, and its GPU energy scaled by ``speed / power_fraction``. The power profile describes the GPU
        only, so CPU energy is kept as measured (the same work), only moved in time. A run uncapped, or capped
        in a dry run (its GPU ran at its default limit), is only shifted.
        """
        started_s = float(started_s or place.started_s)
        emissions = integrate_emissions([(t, g + c) for t, g, c in points], gpu_j + cpu_j, self.signal,
                                        place.zone, started_s)
        shift_s = place.counterfactual_start_s - started_s
        # The compression is written as a correction to the shift, so that an uncapped run's figure is bit for
        # bit what the shift alone gives (x - 0.0 and x * 1.0 are exact).
        saved = 1.0 - place.speed
        scale = place.speed / place.power_fraction
        full_power = [(t + shift_s - (t - started_s) * saved, g * scale + c) for t, g, c in points]
        counterfactual = integrate_emissions(full_power, gpu_j * scale + cpu_j, self.signal,
                                             place.home_zone or self.default_zone, place.counterfactual_start_s)
        return emissions, counterfactual.emissions_g

    def _stored_points(self, run_id: int) -> list[EnergyPoint]:
        """The run's stored samples as cumulative energy points."""
        return [(to_unix_s(s.at), s.gpu_energy_j, s.cpu_energy_j) for s in self.store.stored_samples(run_id)]
