"""The carbon signal of the embedded default, and emissions integrated over a run's power samples.

The built-in signal is *synthetic*: a smooth daily cycle per zone with plausible levels, so every job of the
embedded default gets an emissions figure. It is labelled ``synthetic`` wherever it appears and is not a
measurement of any grid. Real providers (Electricity Maps, WattTime, UK Carbon Intensity) come separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from policies.forecast import ForecastBase, IntensityCurve
from policies.units import J_PER_KWH
from scheduler.clock import Clock, from_unix_s, utc_now

if TYPE_CHECKING:
    from scheduler.carbon.history import HistoryModel

SYNTHETIC_SOURCE = "synthetic"
#: How far a basis can be trusted, least first: a run's emissions carry the least trusted basis it used.
BASES_BY_TRUST = ("synthetic", "forecast", "actual")


@dataclass(frozen=True)
class IntensityReading:
    """The intensity of ``zone`` at ``at`` (g CO2e/kWh) and where it came from.

    ``basis``: ``actual``, ``forecast`` (a provider's or, with source ``history:...``, one made from the zone's
    own history) or ``synthetic`` (a configured fallback or the built-in cycle: no data at all).
    """

    zone: str
    at: datetime
    intensity_g_per_kwh: float
    source: str
    basis: str


@dataclass(frozen=True)
class ZoneStatus:
    """A zone's signal health for ``wattsched carbon`` and the daemon's status."""

    zone: str
    source: str
    state: str  # ok | degraded
    reason: str  # empty when ok
    #: Age of the freshest data (an actual's time, else a forecast's issue time); None when nothing is cached.
    age_s: float | None
    last_success_at: datetime | None = None
    #: WattTime's 0-100 percentile of the current MOER, where the provider has one (not an intensity).
    signal_index_percent: float | None = None
    details: dict[str, str] = field(default_factory=dict)


class CarbonSignal(Protocol):
    """Carbon intensity by zone at explicit times (Unix seconds), with where each value came from.

    Implemented by the built-in SyntheticSignal and by scheduler.carbon.providers.ProviderSignal.
    """

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float: ...

    def reading(self, zone: str, at_s: float) -> IntensityReading: ...

    def forecast(self, zone: str, horizon_s: float | None = None) -> list[IntensityReading]:
        """Readings from now to ``horizon_s`` ahead, from the value in force now onwards."""

    def status(self, zone: str) -> ZoneStatus:
        """Whether the zone's signal is ok or degraded, and why."""


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

    ``seconds_per_hour`` compresses the daily cycle (the demo clock): with 10, a whole day passes in 240 s;
    ``origin_s`` and ``origin_hour`` set which hour of the cycle it is at a given time.
    """

    source = SYNTHETIC_SOURCE
    basis = "synthetic"

    def __init__(self, cycles: dict[str, DailyCycle] | None = None, seconds_per_hour: float = 3600.0,
                 clock: Clock = utc_now, origin_s: float = 0.0, origin_hour: float = 0.0):
        self._cycles = dict(BUILTIN_CYCLES if cycles is None else cycles)
        self._seconds_per_hour = seconds_per_hour
        self._clock = clock
        # the signal's hour of day is origin_hour at time origin_s (the demo starts its day in the evening peak)
        self._origin_s = origin_s
        self._origin_hour = origin_hour

    def reading(self, zone: str, at_s: float) -> IntensityReading:
        return IntensityReading(zone, from_unix_s(at_s), self.intensity_g_per_kwh(zone, at_s), self.source,
                                self.basis)

    def status(self, zone: str) -> ZoneStatus:
        return ZoneStatus(zone, self.source, "ok", "", 0.0)

    def forecast(self, zone: str, horizon_s: float | None = None) -> list[IntensityReading]:
        """Hourly (in the signal's own, possibly compressed, hours) readings up to ``horizon_s`` (default 48 h)."""
        horizon_s = 48 * self._seconds_per_hour if horizon_s is None else horizon_s
        now_s = self._clock().timestamp()
        steps = int(horizon_s // self._seconds_per_hour) + 1
        return [self.reading(zone, now_s + k * self._seconds_per_hour) for k in range(steps)]

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float:
        cycle = self._cycles.get(zone, FALLBACK_CYCLE)
        hour = ((at_s - self._origin_s) / self._seconds_per_hour + self._origin_hour) % 24.0
        return cycle.mean_g_per_kwh + cycle.amplitude_g_per_kwh * math.cos(
            2.0 * math.pi * (hour - cycle.peak_hour_utc) / 24.0
        )


@dataclass(frozen=True)
class Emissions:
    """Emissions of a run (g CO2e), the energy-weighted mean intensity it saw (g/kWh), and their provenance.

    source: the sources of the intensities used, joined with "+"; basis: the least trusted basis among them.
    """

    emissions_g: float
    intensity_g_per_kwh: float
    source: str
    basis: str


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
    sources: set[str] = set()
    bases: set[str] = set()

    def charge(energy_j: float, at_s: float) -> None:
        nonlocal grams
        reading = signal.reading(zone, at_s)
        grams += energy_j / J_PER_KWH * reading.intensity_g_per_kwh
        sources.add(reading.source)
        bases.add(reading.basis)

    previous_s, previous_j = started_s, 0.0
    for timestamp_s, energy_j in samples:
        delta_j = energy_j - previous_j
        if delta_j > 0:
            charge(delta_j, (previous_s + timestamp_s) / 2.0)
        previous_s, previous_j = timestamp_s, max(previous_j, energy_j)
    remainder_j = total_energy_j - previous_j
    if remainder_j > 0:
        charge(remainder_j, previous_s)
    if not sources:  # no energy at all: still say what the grid was like
        charge(0.0, started_s)
    kwh = total_energy_j / J_PER_KWH
    mean = grams / kwh if kwh > 0 else signal.intensity_g_per_kwh(zone, started_s)
    basis = next(b for b in (*BASES_BY_TRUST, *sorted(bases)) if b in bases)
    return Emissions(emissions_g=grams, intensity_g_per_kwh=mean, source="+".join(sorted(sources)), basis=basis)


@dataclass(frozen=True)
class Window:
    """The cleanest stretch of a forecast for a job of a given length: start, end, mean intensity (g/kWh)."""

    start: datetime
    end: datetime
    mean_g_per_kwh: float


def cleanest_window(readings: Sequence[IntensityReading], duration_s: float) -> Window | None:
    """The start (at a reading's time) minimising mean intensity over ``duration_s``, within the readings.

    Readings are piecewise constant, each holding until the next; the last holds until one step after it.
    None when the forecast is shorter than the job.
    """
    if not readings or duration_s <= 0:
        return None
    times = np.array([r.at.timestamp() for r in readings])
    values = np.array([r.intensity_g_per_kwh for r in readings])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 3600.0
    edges = np.append(times, times[-1] + step)
    cumulative = np.concatenate(([0.0], np.cumsum(values * np.diff(edges))))  # g/kWh x s up to each edge

    def integral_to(t: np.ndarray) -> np.ndarray:
        index = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(values) - 1)
        return cumulative[index] + values[index] * (t - edges[index])

    starts = times[times + duration_s <= edges[-1] + 1e-9]
    if starts.size == 0:
        return None
    means = (integral_to(starts + duration_s) - integral_to(starts)) / duration_s
    best = int(np.argmin(means))
    start = from_unix_s(float(starts[best]))
    return Window(start, start + timedelta(seconds=duration_s), float(means[best]))


class SignalForecast(ForecastBase):
    """A ``policies.forecast.CarbonForecast`` over the daemon's carbon signal, as known at ``now_s``.

    Policies see actuals up to now and a forecast after it, never the provider. One instance serves one
    scheduling tick: each zone's forecast is read once (up to the longest horizon asked) and sliced after.

    With a ``model`` (``scheduler.carbon.history.HistoryModel``, kept by ``GridCarbon`` from tick to tick), the
    choice is per zone: a zone whose provider gives a forecast is forecast from it, as without a model; a zone
    whose provider gives none, but whose actuals are cached, from the model of its history (its daily and
    weekly profiles and recent level) instead of the signal's fill-in (the mean of the same hour over the last
    week); and every cached zone's ``history`` is its cached actuals, read in two queries however long. Where
    the cache is unreadable, a tick falls back to the signal's own forecast and readings.
    """

    history_only = False

    def __init__(self, signal: CarbonSignal, now_s: float, history_step_s: float = 3600.0,
                 model: HistoryModel | None = None):
        self.signal = signal
        self.now_s = now_s
        self._history_step_s = history_step_s
        self._model = model
        self._series: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}  # zone -> (horizon_s, times, values)
        self._learned: dict[str, bool] = {}  # zone -> forecast by the model (asked once per tick)

    def learned(self, zone: str) -> bool:
        """Whether ``zone``'s forecast comes from the history model (its provider gives none)."""
        found = self._learned.get(zone)
        if found is None:
            found = self._learned[zone] = self._model is not None and self._model.covers(zone)
        return found

    def intensity(self, zone: str, t_s: float) -> float:
        return self.signal.intensity_g_per_kwh(zone, min(t_s, self.now_s))

    def history_start_s(self, zone: str) -> float:
        start = self._cached_start_s(zone)
        return -np.inf if start is None else start

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self._cached_start_s(zone) is not None:
            try:
                return self._model.source.history(zone, start_s, end_s)
            except SQLAlchemyError:
                pass  # the cache is unreadable: sampled readings (the signal's fallbacks) instead
        end_s = min(end_s, self.now_s)
        times = np.arange(start_s, max(end_s, start_s + 1e-9), self._history_step_s)
        return times, np.array([self.signal.intensity_g_per_kwh(zone, float(t)) for t in times])

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        return self.curves((zone,), end_s)[0]

    def curves(self, zones: tuple[str, ...], end_s: float) -> list[IntensityCurve]:
        learned = tuple(z for z in zones if self.learned(z))
        found = {}
        if learned:
            try:
                found = dict(zip(learned, self._model.curves(learned, end_s)))
            except SQLAlchemyError:
                # the cache is unreadable: this tick, the signal's own forecast (its fallbacks); the model fits
                # nothing on what it could not read
                self._learned.update(dict.fromkeys(learned, False))
        return [found[z] if z in found else ForecastBase.curve(self, z, end_s) for z in zones]

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        if self.learned(zone):
            try:
                return self._model.forecast(zone, start_s, end_s)
            except SQLAlchemyError:
                self._learned[zone] = False  # as in ``curves``
        horizon_s = end_s - self.now_s
        cached = self._series.get(zone)
        if cached is None or cached[0] < horizon_s:
            readings = self.signal.forecast(zone, horizon_s)
            times = np.array([r.at.timestamp() for r in readings]) if readings else np.array([self.now_s])
            values = (np.array([r.intensity_g_per_kwh for r in readings]) if readings
                      else np.array([self.signal.intensity_g_per_kwh(zone, self.now_s)]))
            cached = (horizon_s, times, values)
            self._series[zone] = cached
        _, times, values = cached
        first = max(int(np.searchsorted(times, start_s, side="right")) - 1, 0)
        last = int(np.searchsorted(times, end_s, side="left"))  # a point at end_s holds for no time
        times, values = times[first:max(last, first + 1)].copy(), values[first:max(last, first + 1)]
        times[0] = start_s  # the value in force at start_s holds from start_s
        return times, values

    def _cached_start_s(self, zone: str) -> float | None:
        """Where ``zone``'s cached actuals begin; None without a model, without actuals or when the cache is
        unreadable."""
        if self._model is None:
            return None
        try:
            start = self._model.source.history_start_s(zone)
        except SQLAlchemyError:
            return None
        return start if np.isfinite(start) else None
