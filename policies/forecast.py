"""The carbon signal as a policy may see it: history up to now and a forecast after, never the trace itself.

A ``CarbonForecast`` is handed to a policy in its snapshot; the daemon backs it with a carbon provider, the
simulator with one of its forecast modes. ``IntensityCurve`` is the piecewise-constant signal a forecast returns,
with its running integral so that "emissions of a run from a to b" is two interpolations.
"""

from __future__ import annotations

from functools import cached_property
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

    def history_start_s(self, zone: str) -> float:
        """When ``zone``'s actual history begins (``history`` holds its first value before); ``-inf`` when it
        reaches back as far as anyone asks. A model of the history must not learn from the held value."""

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Actual values over ``[start_s, min(end_s, now_s)]`` as ``(times_s, g_per_kwh)``; ``times_s[0] == start_s``
        and each value holds until the next time."""

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Forecast values over ``[start_s, end_s]`` (``start_s >= now_s``), in the same shape as ``history``."""

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        """The forecast for ``zone`` as a curve valid from ``now_s`` (it may begin earlier) to at least ``end_s``
        (``end_s > now_s``); ``ForecastBase`` builds it from ``forecast``."""

    def curves(self, zones: tuple[str, ...], end_s: float) -> list[IntensityCurve]:
        """``curve`` for each of ``zones``."""

    def learned(self, zone: str) -> bool:
        """Whether ``zone``'s forecast is a model of its own history (the daemon's, for a zone whose provider gives
        no forecast) rather than a provider's: like a ``history_only`` forecast once modelled, it improves as the
        hour nears, so a policy looks again at a long deferral and wants a margin over the present."""


class IntensityCurve:
    """A piecewise-constant intensity over ``[times_s[0], end_s]`` and its integral (g/kWh x s)."""

    def __init__(self, times_s: np.ndarray, values: np.ndarray, end_s: float):
        self.times_s = np.asarray(times_s, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.end_s = float(end_s)
        self.knots_s = np.append(self.times_s, max(self.end_s, self.times_s[-1]))
        widths = np.diff(self.knots_s)
        self.cumulative = np.concatenate(([0.0], np.cumsum(self.values * widths)))

    @classmethod
    def from_parts(cls, knots_s: np.ndarray, values: np.ndarray, cumulative: np.ndarray) -> "IntensityCurve":
        """The curve with pieces ``knots_s[i]..knots_s[i+1]`` at ``values[i]`` and its running integral already
        computed (``cumulative[i]``: the integral up to ``knots_s[i]``); the arrays are kept, not copied."""
        curve = cls.__new__(cls)
        curve.knots_s, curve.values, curve.cumulative = knots_s, values, cumulative
        curve.times_s, curve.end_s = knots_s[:-1], float(knots_s[-1])
        return curve

    def integral(self, start_s, end_s):
        """The integral of intensity from ``start_s`` to ``end_s`` (arrays welcome), g/kWh x s."""
        return np.interp(end_s, self.knots_s, self.cumulative) - np.interp(start_s, self.knots_s, self.cumulative)

    def value_at(self, t_s):
        """The intensity at ``t_s`` (arrays welcome)."""
        i = np.searchsorted(self.times_s, t_s, side="right") - 1
        return self.values[np.maximum(i, 0)]  # before the first time, the first value holds


class ForecastBase:
    """What every ``CarbonForecast`` offers beyond its signal, for implementations to inherit: ``curve`` built from
    ``forecast``, ``curves`` from ``curve``, and a history with no known beginning (the daemon's signal; the
    simulator's traces say where theirs begin). One that can hand out one curve for many decisions (the
    simulator's) overrides ``curve``; one that forecasts zones together (``HistoryForecast``) overrides ``curves``.
    """

    now_s: float

    def history_start_s(self, zone: str) -> float:
        return -np.inf

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        times, values = self.forecast(zone, self.now_s, end_s)
        return IntensityCurve(times, values, end_s)

    def curves(self, zones: tuple[str, ...], end_s: float) -> list[IntensityCurve]:
        return [self.curve(zone, end_s) for zone in zones]

    def learned(self, zone: str) -> bool:
        return False


class ZoneCurves:
    """Several zones' curves on one shared knot grid, so a plan over all zones is one vectorised evaluation.

    Row ``r`` is ``curves[r]``. Piece ``i`` spans ``knots_s[i]..knots_s[i+1]`` at ``values[r, i]``; a piece outside
    a curve's own span holds 0, as that curve's ``integral`` does. ``cumulative[r, i]`` is the integral from
    ``knots_s[0]`` to ``knots_s[i]``.
    """

    def __init__(self, curves):
        self.curves = tuple(curves)
        first = self.curves[0].knots_s
        if len(first) >= 2 and all(c.knots_s is first or np.array_equal(c.knots_s, first) for c in self.curves):
            # the same knots (one zone, or traces on one clock): the curves' own pieces and integrals
            self.knots_s = first
            self.values = np.vstack([c.values[:len(first) - 1] for c in self.curves])
            self.cumulative = np.vstack([c.cumulative for c in self.curves])
        else:
            knots = np.unique(np.concatenate([c.knots_s for c in self.curves]))
            if len(knots) < 2:
                knots = np.array([knots[0], knots[0] + 1.0])
            self.knots_s = knots
            mids = (knots[:-1] + knots[1:]) / 2
            rows = []
            for c in self.curves:
                inside = (mids >= c.knots_s[0]) & (mids <= c.knots_s[-1])
                rows.append(np.where(inside, c.value_at(mids), 0.0))
            self.values = np.vstack(rows)
            self.cumulative = np.concatenate((np.zeros((len(rows), 1)),
                                              np.cumsum(self.values * np.diff(knots), axis=1)), axis=1)
        self._merge_flat()
        # row-major, so that a row's pieces are contiguous and flat views of the tables cost nothing
        self.values, self.cumulative = np.ascontiguousarray(self.values), np.ascontiguousarray(self.cumulative)
        self._cheapest: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def _merge_flat(self) -> None:
        """Drop the knots where no row's value changes: the same curves in fewer pieces, so the searches over
        pieces and knots (start times, cheapest pieces) have fewer candidates. A forecast on a finer grid than its
        signal (30-minute pieces of hourly history) has many such knots. The integrals are the same up to
        rounding."""
        values = self.values
        if values.shape[1] < 2:
            return
        keep = np.empty(values.shape[1], dtype=bool)
        keep[0] = True
        np.any(values[:, 1:] != values[:, :-1], axis=0, out=keep[1:])
        if keep.all():
            return
        knots = np.append(keep, True)
        self.knots_s = self.knots_s[knots]
        self.values = values[:, keep]
        self.cumulative = self.cumulative[:, knots]

    @cached_property
    def integral_error(self) -> float:
        """A bound on the rounding error of the difference of two running integrals looked up on these curves
        (``policies.carbon_search.integral_to``), in g/kWh x s.

        Running integrals over long spans are large (a trace padded far back), while a short run's integral is
        their small difference, so comparisons of such differences need this much slack.
        """
        return 8 * np.finfo(float).eps * (float(np.abs(self.cumulative).max())
                                          + float(np.abs(self.knots_s).max() * np.abs(self.values).max()))

    def piece(self, t_s: float) -> int:
        """The index of the piece holding the instant ``t_s``, clipped into the grid."""
        i = int(self.knots_s.searchsorted(t_s, "right")) - 1
        return min(max(i, 0), len(self.knots_s) - 2)

    def value_at(self, rows: np.ndarray | list[int] | slice, t_s: float) -> np.ndarray:
        """Each row's intensity at the instant ``t_s``."""
        return self.values[rows, self.piece(t_s)]

    def lowest(self, rows: np.ndarray, start_s: float, end_s: float) -> np.ndarray:
        """Each row's lowest intensity anywhere in ``[start_s, end_s)``."""
        i = self.piece(start_s)
        j = max(int(np.searchsorted(self.knots_s, end_s, side="left")), i + 1)
        return self.values[rows, i:j].min(axis=1)

    def cheapest(self, rows: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Per piece, the lowest value among ``rows`` and the position in ``rows`` that has it (first of equals)."""
        found = self._cheapest.get(rows)
        if found is None:
            sub = self.values[list(rows)]
            where = np.argmin(sub, axis=0)
            found = (sub[where, np.arange(sub.shape[1])], where)
            self._cheapest[rows] = found
        return found
