"""The grids' carbon intensity as the daemon knows it: what its policy is shown, what ``wattsched carbon`` and
the status report, and the refresh that keeps the providers' cache in the database fresh."""

from __future__ import annotations

import logging
from typing import Any, Iterable

from sqlalchemy.orm import Session, sessionmaker

from scheduler.carbon.history import HistoryModel
from scheduler.carbon.signal import CarbonSignal, SignalForecast, SyntheticSignal, cleanest_window
from scheduler.clock import Clock, to_unix_s
from scheduler.config import Settings

log = logging.getLogger(__name__)


def configured_signal(settings: Settings, sessions: sessionmaker[Session], clock: Clock) -> CarbonSignal:
    """The configured providers' signal (cached in ``sessions``' database), or the built-in synthetic one when
    none is configured."""
    if not settings.carbon_config:
        return SyntheticSignal(clock=clock)
    from scheduler.carbon.providers import CarbonConfig, build_signal

    return build_signal(CarbonConfig.from_file(settings.carbon_config), sessions, clock)


class GridCarbon:
    """The daemon's carbon signal, read as of the daemon's clock.

    A signal that caches providers' actuals (``ProviderSignal``) comes with one ``HistoryModel``, kept for the
    daemon's life: the forecast of a zone whose provider gives none is that model's, refitted at the model's own
    cadence rather than every tick.
    """

    def __init__(self, signal: CarbonSignal, clock: Clock):
        from scheduler.carbon.providers import ProviderSignal

        self.signal = signal
        self.clock = clock
        self.history_model = HistoryModel(signal) if isinstance(signal, ProviderSignal) else None

    @property
    def needs_refresh(self) -> bool:
        """Whether the signal reads a providers' cache that ``refresh`` must keep filled (the built-in signal
        computes its values)."""
        from scheduler.carbon.providers import ProviderSignal

        return isinstance(self.signal, ProviderSignal)

    @property
    def zones(self) -> set[str]:
        """The zones the signal is configured for (none for a signal that answers for any zone)."""
        return set(getattr(self.signal, "zones", ()))

    def refresh(self) -> None:
        """Refresh every zone's carbon data from its provider; a failing zone is logged and degrades, never
        raises."""
        from scheduler.carbon.providers import refresh_zones

        for outcome in refresh_zones(self.signal, self.clock):
            if outcome.error:
                log.warning("carbon signal for zone %s: %s", outcome.zone, outcome.error)

    def intensities(self, zones: Iterable[str], now_s: float) -> dict[str, float]:
        """Each zone's intensity at ``now_s`` (g CO2e/kWh)."""
        return {z: self.signal.intensity_g_per_kwh(z, now_s) for z in zones}

    def forecast(self, now_s: float) -> SignalForecast:
        """The forecast a policy sees at ``now_s``: actuals up to then, after it each zone's provider forecast,
        or the history model's where the provider gives none (``SignalForecast``)."""
        if self.history_model is not None:
            self.history_model.advance(now_s)
        return SignalForecast(self.signal, now_s, model=self.history_model)

    def health(self, zones: Iterable[str]) -> list[dict[str, Any]]:
        """Each zone's signal health (ok or degraded, why, age of its data in s), for the daemon's status."""
        return [{"zone": st.zone, "source": st.source, "state": st.state, "reason": st.reason, "age_s": st.age_s}
                for st in (self.signal.status(z) for z in zones)]

    def views(self, zones: Iterable[str], duration_s: float | None = None,
              horizon_s: float = 48 * 3600.0) -> list[dict[str, Any]]:
        """Each zone's current intensity, signal health and forecast (``horizon_s`` ahead), and the cleanest
        window for a job of ``duration_s``."""
        now_s = to_unix_s(self.clock())
        views = []
        for z in zones:
            status = self.signal.status(z)
            current = self.signal.reading(z, now_s)
            forecast = self.signal.forecast(z, horizon_s)
            window = cleanest_window(forecast, duration_s) if duration_s else None
            views.append({
                "zone": z, "state": status.state, "reason": status.reason, "age_s": status.age_s,
                "source": current.source, "basis": current.basis, "intensity_g_per_kwh": current.intensity_g_per_kwh,
                "signal_index_percent": status.signal_index_percent,
                "forecast": [{"at": r.at.isoformat(), "intensity_g_per_kwh": r.intensity_g_per_kwh,
                              "basis": r.basis} for r in forecast],
                "cleanest_window": None if window is None else {
                    "start": window.start.isoformat(), "end": window.end.isoformat(),
                    "mean_g_per_kwh": window.mean_g_per_kwh},
            })
        return views
