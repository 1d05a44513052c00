"""The carbon signal as a policy may see it: history up to now and a forecast after, never the trace itself.

A ``CarbonForecast`` is handed to a policy in its snapshot; the daemon backs it with a carbon provider, the
simulator with one of its forecast modes. ``IntensityCurve`` is the piecewise-constant signal a forecast returns,
with its running integral so that "emissions of a run from a to b" is two interpolations.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class CarbonForecast(Protocol):
    """Carbon intensity (g/kWh) of each zone as known at ``now_s``.

    history_only: True when ``forecast`` only replays history (persistence), so a policy may do better by
    modelling the history itself.
    """

    now_s: float
    history_only: bool

    def intensity(self, zone: str, t_s: float) -> float:
        """The actual intensity at ``t_s <= now_s``."""

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Actual values over ``[start_s, min(end_s, now_s)]`` as ``(times_s, g_per_kwh)``; ``times_s[0] == start_s``
        and each value holds until the next time."""

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Forecast values over ``[start_s, end_s]`` (``start_s >= now_s``), in the same shape as ``history``."""


class IntensityCurve:
    """A piecewise-constant intensity over ``[times_s[0], end_s]`` and its integral (g/kWh x s)."""

    def __init__(self, times_s: np.ndarray, values: np.ndarray, end_s: float):
        self.times_s = np.asarray(times_s, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.end_s = float(end_s)
        self.knots_s = np.append(self.times_s, max(self.end_s, self.times_s[-1]))
        widths = np.diff(self.knots_s)
        self.cumulative = np.concatenate(([0.0], np.cumsum(self.values * widths)))

    def integral(self, start_s, end_s):
        """The integral of intensity from ``start_s`` to ``end_s`` (arrays welcome), g/kWh x s."""
        return np.interp(end_s, self.knots_s, self.cumulative) - np.interp(start_s, self.knots_s, self.cumulative)

    def value_at(self, t_s):
        """The intensity at ``t_s`` (arrays welcome)."""
        i = np.searchsorted(self.times_s, t_s, side="right") - 1
        return self.values[np.maximum(i, 0)]  # before the first time, the first value holds

    def lowest(self, start_s: float, end_s: float) -> float:
        """The lowest intensity anywhere in ``[start_s, end_s)``."""
        i = max(int(np.searchsorted(self.times_s, start_s, side="right")) - 1, 0)
        j = max(int(np.searchsorted(self.times_s, end_s, side="left")), i + 1)
        return float(self.values[i:j].min())


def curve_from(forecast: CarbonForecast, zone: str, end_s: float) -> IntensityCurve:
    """The forecast for ``zone`` from its ``now_s`` to ``end_s`` as a curve.

    A forecast may offer ``curve(zone, end_s)`` itself (a curve valid from now to at least ``end_s``, possibly
    starting earlier): the simulator's do, so that one curve serves many decisions.
    """
    end_s = max(end_s, forecast.now_s + 1.0)
    if hasattr(forecast, "curve"):
        return forecast.curve(zone, end_s)
    times, values = forecast.forecast(zone, forecast.now_s, end_s)
    return IntensityCurve(times, values, end_s)
