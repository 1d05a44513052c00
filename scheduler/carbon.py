"""The carbon signal of the embedded default, and emissions integrated over a run's power samples.

The built-in signal is *synthetic*: a smooth daily cycle per zone with plausible levels, so every job of the
embedded default gets an emissions figure. It is labelled ``synthetic`` wherever it appears and is not a
measurement of any grid. Real providers (Electricity Maps, WattTime, UK Carbon Intensity) come separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

SYNTHETIC_SOURCE = "synthetic"


class CarbonSignal(Protocol):
    """Carbon intensity of a zone at an explicit time (Unix seconds); ``source`` names where it comes from."""

    source: str
    basis: str  # actual | forecast | synthetic

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float: ...


@dataclass(frozen=True)
class DailyCycle:
    """Intensity = mean + amplitude x cos(2 pi (hour - peak_hour) / 24); g/kWh."""

    mean_g_per_kwh: float
    amplitude_g_per_kwh: float
    peak_hour_utc: float


# Levels chosen to resemble each grid's typical range (DE coal/gas heavy, FR nuclear, GB in between); not data.
BUILTIN_CYCLES: dict[str, DailyCycle] = {
    "DE": DailyCycle(380.0, 110.0, 18.0),
    "FR": DailyCycle(60.0, 20.0, 19.0),
    "GB": DailyCycle(200.0, 70.0, 17.5),
}
FALLBACK_CYCLE = DailyCycle(300.0, 80.0, 18.0)


class SyntheticSignal:
    """A deterministic, clearly labelled synthetic signal for the embedded default's zones.

    ``seconds_per_hour`` compresses the daily cycle (the demo clock): with 10, a whole day passes in 240 s.
    """

    source = SYNTHETIC_SOURCE
    basis = "synthetic"

    def __init__(self, cycles: dict[str, DailyCycle] | None = None, seconds_per_hour: float = 3600.0):
        self._cycles = dict(BUILTIN_CYCLES if cycles is None else cycles)
        self._seconds_per_hour = seconds_per_hour

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float:
        cycle = self._cycles.get(zone, FALLBACK_CYCLE)
        hour = (at_s / self._seconds_per_hour) % 24.0
        return cycle.mean_g_per_kwh + cycle.amplitude_g_per_kwh * math.cos(
            2.0 * math.pi * (hour - cycle.peak_hour_utc) / 24.0
        )


@dataclass(frozen=True)
class Emissions:
    """Emissions of a run (g CO2e) and the energy-weighted mean intensity it saw (g/kWh)."""

    emissions_g: float
    intensity_g_per_kwh: float


def integrate_emissions(
    samples: Sequence[tuple[float, float]], total_energy_j: float, signal: CarbonSignal, zone: str,
    started_s: float,
) -> Emissions:
    """Emissions of a run from its cumulative energy samples ``(timestamp_s, energy_j)``.

    Each interval's energy is charged at the intensity at the interval's midpoint, so a run that draws most
    while the grid is dirty is charged more than average power x average intensity would say. Energy after
    the last sample (up to ``total_energy_j``) is charged at the last sample's intensity.
    """
    grams = 0.0
    previous_s, previous_j = started_s, 0.0
    for timestamp_s, energy_j in samples:
        delta_j = energy_j - previous_j
        if delta_j > 0:
            midpoint_s = (previous_s + timestamp_s) / 2.0
            grams += delta_j / 3.6e6 * signal.intensity_g_per_kwh(zone, midpoint_s)
        previous_s, previous_j = timestamp_s, max(previous_j, energy_j)
    remainder_j = total_energy_j - previous_j
    if remainder_j > 0:
        grams += remainder_j / 3.6e6 * signal.intensity_g_per_kwh(zone, previous_s)
    kwh = total_energy_j / 3.6e6
    mean = grams / kwh if kwh > 0 else signal.intensity_g_per_kwh(zone, started_s)
    return Emissions(emissions_g=grams, intensity_g_per_kwh=mean)
