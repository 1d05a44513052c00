"""What a policy may see of the carbon traces at virtual time t: the forecast modes of simulation.md.

The driver owns one forecast object per run and moves its ``now_s``; policies get the object, never the traces,
and an actual value after ``now_s`` is refused (``ForecastPeek``). Modes:

- ``perfect``: the actual future values;
- ``persistence``: for tau > t, the actual value at tau - k x 24 h for the smallest k >= 1 with that time <= t,
  i.e. the last 24 hours of history repeated;
- ``noisy:REL_ERR``: the actual value times ``max(0, 1 + REL_ERR x min(1, h / 24 h) x z)``, where h is the
  horizon (from now to the start of the trace's piece, 0 for pieces already begun) and z is a standard normal
  drawn once per zone and trace piece from the seed. The spread grows linearly with the horizon up to REL_ERR
  (one standard deviation) at 24 h and beyond; an hour's error persists from one issue time to the next.
"""

from __future__ import annotations

import numpy as np

from policies.forecast import ForecastBase, IntensityCurve
from scheduler.errors import ForecastPeek, InputError
from scheduler.simulation.inputs import Cluster

DAY_S = 86400.0
NOISE_RAMP_S = DAY_S
MODES = ("perfect", "persistence", "noisy:REL_ERR")


class ZoneSignal:
    """A zone's actual intensity on the simulation clock, padded so the curve covers any time asked."""

    def __init__(self, times_s: np.ndarray, values: np.ndarray, pad_s: float = 1e9):
        self.first_s = float(times_s[0])  # where the trace begins: before it, its first value is held
        self.times_s = np.concatenate(([min(times_s[0], 0.0) - pad_s], times_s[1:])) if len(times_s) > 1 \
            else np.array([-pad_s])
        self.values = values
        self.curve = IntensityCurve(self.times_s, self.values, max(times_s[-1], 0.0) + pad_s)

    def value_at(self, t_s: float) -> float:
        return float(self.values[np.searchsorted(self.times_s, t_s, "right") - 1])

    def window(self, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """The actual pieces over ``[start_s, end_s]``: times from ``start_s``, and their values."""
        i = int(np.searchsorted(self.times_s, start_s, "right")) - 1
        j = int(np.searchsorted(self.times_s, end_s, "left"))
        return np.concatenate(([start_s], self.times_s[i + 1:j])), self.values[i:j]


class TraceForecast(ForecastBase):
    """The base of the modes: history straight from the traces, up to ``now_s`` only."""

    history_only = False

    def __init__(self, signals: dict[str, ZoneSignal]):
        self._signals = signals
        self.now_s = 0.0

    def intensity(self, zone: str, t_s: float) -> float:
        if t_s > self.now_s + 1e-6:
            raise ForecastPeek(f"asked for the actual intensity of {zone} at {t_s}, after now ({self.now_s})")
        return self._signals[zone].value_at(t_s)

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self._signals[zone].window(start_s, min(end_s, self.now_s))

    def history_start_s(self, zone: str) -> float:
        return self._signals[zone].first_s

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        if start_s < self.now_s:
            past_t, past_v = self.history(zone, start_s, self.now_s)
            t, v = self._ahead(zone, self.now_s, end_s)
            return np.concatenate((past_t, t)), np.concatenate((past_v, v))
        return self._ahead(zone, start_s, end_s)

    def _ahead(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class PerfectForecast(TraceForecast):
    """The actual future."""

    def _ahead(self, zone, start_s, end_s):
        return self._signals[zone].window(start_s, end_s)

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        """The whole actual curve: integrals over any window from now are its forecast."""
        return self._signals[zone].curve


class PersistenceForecast(TraceForecast):
    """Same time on the last known day."""

    history_only = True

    def __init__(self, signals):
        super().__init__(signals)
        self._cache: dict[str, tuple[float, IntensityCurve]] = {}

    def _ahead(self, zone, start_s, end_s):
        now = self.now_s
        day_t, day_v = self._signals[zone].window(now - DAY_S, now)
        blocks = int(np.ceil((end_s - now) / DAY_S)) + 1
        times = np.concatenate([day_t + k * DAY_S for k in range(1, blocks + 1)])
        values = np.tile(day_v, blocks)
        i = max(int(np.searchsorted(times, start_s, "right")) - 1, 0)
        j = int(np.searchsorted(times, end_s, "left"))
        return np.concatenate(([start_s], times[i + 1:j])), values[i:j]

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        cached = self._cache.get(zone)
        if cached is None or cached[0] != self.now_s or cached[1].end_s < end_s:
            times, values = self._ahead(zone, self.now_s, end_s)
            cached = (self.now_s, IntensityCurve(times, values, end_s))
            self._cache[zone] = cached
        return cached[1]


class NoisyForecast(TraceForecast):
    """Actual values with seeded multiplicative noise that grows with the horizon (model in the module docstring)."""

    def __init__(self, signals, rel_err: float, seed: int):
        super().__init__(signals)
        self.rel_err = rel_err
        self._z = {zone: np.random.default_rng([seed, i]).standard_normal(len(s.values))
                   for i, (zone, s) in enumerate(signals.items())}

    def _ahead(self, zone, start_s, end_s):
        signal = self._signals[zone]
        times, values = signal.window(start_s, end_s)
        first = int(np.searchsorted(signal.times_s, start_s, "right")) - 1
        z = self._z[zone][first:first + len(values)]
        horizon = np.maximum(times - self.now_s, 0.0)
        return times, np.maximum(values * (1 + self.rel_err * np.minimum(horizon / NOISE_RAMP_S, 1.0) * z), 0.0)


def make_forecast(spec: str, cluster: Cluster, seed: int = 0) -> TraceForecast:
    """The forecast named by ``--forecast`` (perfect | persistence | noisy:REL_ERR) over the cluster's traces."""
    signals = {z.name: ZoneSignal(z.times_s, z.g_per_kwh) for z in cluster.zones}
    if spec == "perfect":
        return PerfectForecast(signals)
    if spec == "persistence":
        return PersistenceForecast(signals)
    if spec.startswith("noisy:"):
        try:
            rel_err = float(spec.split(":", 1)[1])
        except ValueError:
            rel_err = -1.0
        if rel_err >= 0:
            return NoisyForecast(signals, rel_err, seed)
    raise InputError("--forecast", None, None, f"unknown forecast {spec!r}; expected one of {', '.join(MODES)}")
