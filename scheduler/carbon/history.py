"""The daemon's forecast from a zone's own history, for zones whose provider gives no forecast.

``HistoryModel`` keeps one ``policies.history_forecast.HistoryForecast`` (ridge model per horizon band, the
calibrated blend while a zone has less than four weeks of actuals) over ``CachedHistory``, the zones' cached
actuals read in one query per read. It lives as long as the daemon's ``GridCarbon``, so the model refits at its
own cadence (its weights once a day per zone, its curves once per 30-minute step) and a tick in between reads
nothing.

A zone in its cold start also gets a shape prior from ``CachedHistory.shape_prior``: the mean relative week of
the daemon's other zones that are past theirs, so a new zone borrows the shape of a grid's day and week (its
weekends) until its own is learned. Each zone's relative week is read once a day, only while a zone is cold.
"""

from __future__ import annotations

import math
from typing import Iterable, Protocol

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from policies.forecast import IntensityCurve
from policies.history_forecast import COLD_START_S, DAY_S, WEEK_S, HistoryForecast, ShapePrior, relative_week

HOUR_S = 3600.0
MONDAY_UNIX_S = 4 * DAY_S  # 5 January 1970, a Monday, 00:00 UTC: the prior's hours of the week count from there
# The whole weeks of another zone's actuals its relative week is learned from (and the week under way): the
# present season's shape, and a read that stays small however long the cache's history.
PRIOR_WEEKS = 8
MIN_WEEK_HOURS = 150  # of a week's 168 hours with actuals, for the week to count


class HistorySignal(Protocol):
    """What the model reads of a carbon signal (``scheduler.carbon.providers.ProviderSignal``)."""

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float: ...

    def actuals(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]: ...

    def history_start_s(self, zone: str) -> float | None: ...

    def has_forecast(self, zone: str) -> bool: ...

    @property
    def zones(self) -> Iterable[str]: ...


class CachedHistory:
    """The source ``HistoryForecast`` learns from: the signal's cached actuals up to ``now_s`` (never its
    forecasts, nor the profile values ``reading`` gives in a gap), where each zone's actuals begin, and a cold
    zone's shape prior from the other zones' actuals."""

    history_only = True

    def __init__(self, signal: HistorySignal):
        self.signal = signal
        self.now_s = -math.inf
        self._starts: dict[str, float] = {}  # fixed once known: cached actuals are never pruned
        self._prior_day: int | None = None
        self._priors: dict[str, ShapePrior | None] = {}  # zone -> its prior, this day
        self._weeks: dict[str, np.ndarray | None] = {}  # zone -> its relative week, this day

    def intensity(self, zone: str, t_s: float) -> float:
        return self.signal.intensity_g_per_kwh(zone, min(t_s, self.now_s))

    def history_start_s(self, zone: str) -> float:
        """When ``zone``'s cached actuals begin; ``inf`` while it has none. The signal's reads raise where the
        cache is unreadable (``SQLAlchemyError``), here and in ``history``, so the model fits nothing then."""
        start = self._starts.get(zone)
        if start is None:
            found = self.signal.history_start_s(zone)
            if found is None:
                return math.inf
            start = self._starts[zone] = found
        return start

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Actuals over ``[start_s, min(end_s, now_s)]``; ``times_s[0] == start_s``. A zone with none holds its
        present intensity."""
        times, values = self.signal.actuals(zone, start_s, min(end_s, self.now_s))
        if not len(times):
            return np.array([start_s]), np.array([self.intensity(zone, self.now_s)])
        return times, values

    def shape_prior(self, zone: str) -> ShapePrior | None:
        """The day's shape across zones, for ``zone`` in its cold start: the mean over the signal's other zones
        with at least ``COLD_START_S`` of cached actuals of their relative weeks (each hour over its week's mean, by
        hour of the week from Monday 00:00 UTC, over their last ``PRIOR_WEEKS`` weeks with ``MIN_WEEK_HOURS``).
        None when no other zone has that much, when ``zone`` is past its cold start, or when the cache is
        unreadable. Fixed for a day, as the day's model fits its blend with the prior or without it once and
        then forecasts with that fit; so each zone's actuals are read once a day, and a read that fails leaves
        ``zone`` without a prior for the day, as one that finds none."""
        day = int(self.now_s // DAY_S)
        if day != self._prior_day:
            self._prior_day, self._priors, self._weeks = day, {}, {}
        if zone not in self._priors:
            try:
                self._priors[zone] = self._shape_prior(zone)
            except SQLAlchemyError:
                self._priors[zone] = None
        return self._priors[zone]

    def _shape_prior(self, zone: str) -> ShapePrior | None:
        if self.now_s - self.history_start_s(zone) >= COLD_START_S:
            return None
        weeks = [week for week in (self._relative_week(other) for other in self.signal.zones if other != zone)
                 if week is not None]
        if not weeks:
            return None
        relative = np.mean(weeks, axis=0)
        return ShapePrior(MONDAY_UNIX_S, HOUR_S, relative) if np.all(relative > 0) else None

    def _relative_week(self, zone: str) -> np.ndarray | None:
        """``zone``'s relative week over its recent actuals (one read); None while it has less than
        ``COLD_START_S`` of them or a week's hour is never known."""
        if zone not in self._weeks:
            week = None
            start_s = self.history_start_s(zone)
            if self.now_s - start_s >= COLD_START_S:
                this_week = np.floor((self.now_s - MONDAY_UNIX_S) / WEEK_S)
                since_s = max(start_s, MONDAY_UNIX_S + (this_week - PRIOR_WEEKS) * WEEK_S)
                times_s, values = self.signal.actuals(zone, since_s, self.now_s)
                found = relative_week(times_s, values, MONDAY_UNIX_S, MIN_WEEK_HOURS)
                week = found if np.all(np.isfinite(found)) else None
            self._weeks[zone] = week
        return self._weeks[zone]


class HistoryModel:
    """The history model of every zone whose provider gives no forecast, kept from tick to tick."""

    def __init__(self, signal: HistorySignal):
        self.signal = signal
        self.source = CachedHistory(signal)
        self._model: HistoryForecast | None = None
        self._day: int | None = None

    def advance(self, now_s: float) -> None:
        """Move the model to ``now_s`` (the tick's time)."""
        self.source.now_s = now_s
        day = int(now_s // DAY_S)
        if self._model is None or day != self._day:
            # the model's fits are per day, so a new day's model loses nothing and its memo holds one day's fits
            self._model, self._day = HistoryForecast(self.source), day
        self._model.now_s = now_s

    def covers(self, zone: str) -> bool:
        """Whether ``zone`` is forecast by this model: its provider gives no forecast, and it has actuals (an
        unreadable cache: not now, the signal's own forecast serves)."""
        try:
            return not self.signal.has_forecast(zone) and math.isfinite(self.source.history_start_s(zone))
        except SQLAlchemyError:
            return False

    def curves(self, zones: tuple[str, ...], end_s: float) -> list[IntensityCurve]:
        """Each zone's forecast from now to at least ``end_s``."""
        return self._current().curves(zones, end_s)

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self._current().forecast(zone, start_s, end_s)

    def _current(self) -> HistoryForecast:
        if self._model is None:
            raise RuntimeError("HistoryModel.advance must be called before the model forecasts")
        return self._model
