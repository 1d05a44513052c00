"""The daemon's forecast from a zone's own history, for zones whose provider gives no forecast.

``HistoryModel`` keeps one ``policies.history_forecast.HistoryForecast`` (ridge model per horizon band, the
calibrated blend while a zone has less than four weeks of actuals) over ``CachedHistory``, the zones' cached
actuals read in one query per read. It lives as long as the daemon's ``GridCarbon``, so the model refits at its
own cadence (its weights once a day per zone, its curves once per 30-minute step) and a tick in between reads
nothing.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from policies.forecast import IntensityCurve
from policies.history_forecast import DAY_S, HistoryForecast


class HistorySignal(Protocol):
    """What the model reads of a carbon signal (``scheduler.carbon.providers.ProviderSignal``)."""

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float: ...

    def actuals(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]: ...

    def history_start_s(self, zone: str) -> float | None: ...

    def has_forecast(self, zone: str) -> bool: ...


class CachedHistory:
    """The source ``HistoryForecast`` learns from: the signal's cached actuals up to ``now_s`` (never its
    forecasts, nor the profile values ``reading`` gives in a gap), and where each zone's actuals begin."""

    history_only = True

    def __init__(self, signal: HistorySignal):
        self.signal = signal
        self.now_s = -math.inf
        self._starts: dict[str, float] = {}  # fixed once known: cached actuals are never pruned

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
