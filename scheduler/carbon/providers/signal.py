"""The carbon signal the daemon uses: per-zone intensity at any time from the cache, and each zone's health.

:class:`ProviderSignal` implements :class:`scheduler.carbon.signal.CarbonSignal`. It never calls a provider and never
raises: the refresh job (:mod:`.refresh`) fills the cache and reports each zone's outcome here, and queries only
read the cache, so a slow or failing provider can never stall a scheduling tick. For a time ``t`` it answers,
in order of preference:

1. ``t`` in the past or now: the freshest actual in force at ``t`` (if it is at most ``actual_max_gap_s`` old);
2. the latest-issued provider forecast covering ``t``;
3. a forecast from the zone's own history: the mean of the same UTC hour over the last ``history_days``;
4. the freshest actual, however old (persistence);
5. the zone's configured fallback value, else the built-in synthetic cycle (both labelled ``synthetic``).

A zone is *degraded* when its last refresh failed (the reason says why: unavailable, bad credentials, bad
response, stale), when its freshest data is older than ``stale_after_s``, or when nothing is cached for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

import numpy as np
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.carbon.signal import IntensityReading, SyntheticSignal, ZoneStatus
from scheduler.carbon.providers.base import FORECAST, CarbonProvider, SignalIndexPoint
from scheduler.store.carbon_cache import CachedIntensity, CarbonCache
from scheduler.carbon.providers.config import CarbonConfig, ProviderConfig
from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.carbon.providers.electricitymaps import PUBLIC_URL as ELECTRICITYMAPS_URL
from scheduler.carbon.providers.http import HttpClient, RequestsTransport, Transport
from scheduler.carbon.providers.static import StaticProvider
from scheduler.carbon.providers.trace import TraceProvider
from scheduler.carbon.providers.ukcarbon import PUBLIC_URL as UKCARBON_URL
from scheduler.carbon.providers.ukcarbon import UkCarbonProvider, regional_path
from scheduler.carbon.providers.watttime import PUBLIC_URL as WATTTIME_URL
from scheduler.carbon.providers.watttime import WattTimeProvider
from scheduler.clock import Clock, from_unix_s

log = logging.getLogger(__name__)

OK = "ok"
DEGRADED = "degraded"
HISTORY_SOURCE_PREFIX = "history:"
FALLBACK_SOURCE = "fallback"
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class SignalPolicy:
    """How the signal and its refresh judge freshness and fill gaps."""

    #: An actual describes times up to this long after its own time (hourly data needs at least 3600 s).
    actual_max_gap_s: float = 2 * 3600.0
    #: A zone whose freshest data is older than this is degraded (stale), even if its provider answers.
    stale_after_s: float = 3 * 3600.0
    #: Days of the zone's own actuals averaged, hour by hour, into the history-based forecast.
    history_days: float = 7.0
    #: How far back each refresh asks for actuals, and how far ahead for forecasts.
    history_window_s: float = 24 * 3600.0
    horizon_s: float = 48 * 3600.0
    #: After a failed refresh, wait retry_base_s x 2^(failures-1), at most retry_max_s, before trying again.
    retry_base_s: float = 60.0
    retry_max_s: float = 1800.0
    #: Forecast rows for times older than this are pruned by the refresh (actuals have replaced them).
    keep_forecasts_s: float = 2 * 86400.0


@dataclass(frozen=True)
class ZoneFeed:
    """A zone bound to its provider and the provider's region id for it."""

    zone: str
    provider: CarbonProvider
    region: str
    #: g/kWh used when neither provider nor cache has anything; None = the built-in synthetic cycle.
    fallback_g_per_kwh: float | None = None


@dataclass
class ZoneHealth:
    """What the refresh job last learned about a zone's provider (kept in memory; rebuilt by the next refresh)."""

    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    #: Short kind of the last failure (``unavailable``, ``bad-credentials``, ...) and its message; empty when ok.
    error_kind: str = ""
    error: str = ""
    failures: int = 0
    next_attempt_at: datetime | None = None
    #: Fingerprint of credentials the provider refused; the zone is not retried until they change.
    rejected_credentials: str | None = None
    signal_index: SignalIndexPoint | None = None


class ProviderSignal:
    """Carbon intensity per configured zone from the cache, with per-zone health (see the module docstring)."""

    basis = "mixed"  # per reading: see reading()

    def __init__(self, feeds: dict[str, ZoneFeed], cache: CarbonCache, clock: Clock,
                 policy: SignalPolicy = SignalPolicy()):
        self.feeds = dict(feeds)
        self.cache = cache
        self.policy = policy
        self._clock = clock
        self._health = {zone: ZoneHealth() for zone in self.feeds}
        self._synthetic = SyntheticSignal()
        # The hourly profile costs one query over a week of rows; reuse it within a five-minute slot.
        self._profiles: dict[str, tuple[int, dict[int, float]]] = {}
        self.source = "+".join(sorted({feed.provider.source for feed in self.feeds.values()})) or SYNTHETIC

    @property
    def zones(self) -> list[str]:
        return sorted(self.feeds)

    def health(self, zone: str) -> ZoneHealth:
        """The mutable health record the refresh job updates."""
        return self._health.setdefault(zone, ZoneHealth())

    def intensity_g_per_kwh(self, zone: str, at_s: float) -> float:
        return self.reading(zone, at_s).intensity_g_per_kwh

    def reading(self, zone: str, at_s: float) -> IntensityReading:
        """The best value for ``zone`` at ``at_s`` (Unix seconds) as known now; never raises."""
        at, as_of = from_unix_s(at_s), self._clock()
        feed = self.feeds.get(zone)
        if feed is None:
            return self._fallback(zone, at, None)
        try:
            return self._cached_reading(feed, at, as_of) or self._fallback(zone, at, feed.fallback_g_per_kwh)
        except SQLAlchemyError as exc:
            log.warning("carbon cache unreadable for zone %s: %s", zone, exc.__class__.__name__)
            return self._fallback(zone, at, feed.fallback_g_per_kwh)

    def forecast(self, zone: str, horizon_s: float | None = None) -> list[IntensityReading]:
        """The next ``horizon_s`` (default: the policy's) as readings, from the value in force now onwards.

        Uses the latest provider forecast; where it ends early or is missing, hourly readings fill the rest.
        """
        as_of = self._clock()
        horizon_s = self.policy.horizon_s if horizon_s is None else horizon_s
        feed = self.feeds.get(zone)
        readings: list[IntensityReading] = []
        if feed is not None:
            try:
                readings = [_reading(row) for row in
                            self.cache.forecast_series(zone, as_of, horizon_s, feed.provider.source)]
            except SQLAlchemyError:
                readings = []
        end = as_of + timedelta(seconds=horizon_s)
        step = timedelta(hours=1)
        cursor = readings[-1].at + step if readings else as_of
        while cursor <= end:
            readings.append(self.reading(zone, cursor.timestamp()))
            cursor += step
        return readings

    def actuals(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        """``zone``'s cached actuals over ``[start_s, end_s]`` as known now, in two queries however long the span:
        ``(times_s, g_per_kwh)``, from the actual in force at ``start_s`` (placed at ``start_s``; before the
        history begins, its first value), each value holding until the next. Only actuals, never a forecast or
        profile value in a gap. Empty where nothing is cached. Unlike ``reading``, an unreadable cache raises
        (``SQLAlchemyError``): a model fitted on an empty history in its place would keep that fit all day."""
        feed = self.feeds.get(zone)
        if feed is None:
            return np.empty(0), np.empty(0)
        as_of, source = self._clock(), feed.provider.source
        start, end = from_unix_s(start_s), from_unix_s(max(end_s, start_s))
        in_force = self.cache.actual_at(zone, start, as_of, source)
        rows = self.cache.actual_series(zone, start, end, as_of, source)
        if in_force is not None and (not rows or rows[0][0] > start):
            rows.insert(0, (start, in_force.intensity_g_per_kwh))
        if not rows:
            return np.empty(0), np.empty(0)
        times = np.array([at.timestamp() for at, _ in rows])
        times[0] = start_s  # before the history begins, its first value holds
        return times, np.array([value for _, value in rows])

    def history_start_s(self, zone: str) -> float | None:
        """When ``zone``'s cached actual history begins (Unix s); None when it has none. An unreadable cache
        raises (``SQLAlchemyError``)."""
        feed = self.feeds.get(zone)
        if feed is None:
            return None
        first = self.cache.first_actual_at(zone, self._clock(), feed.provider.source)
        return None if first is None else first.timestamp()

    def has_forecast(self, zone: str) -> bool:
        """Whether the cache holds a provider forecast for ``zone`` that reaches past now. An unreadable cache
        raises (``SQLAlchemyError``)."""
        feed = self.feeds.get(zone)
        if feed is None:
            return False
        as_of = self._clock()
        series = self.cache.forecast_series(zone, as_of, self.policy.horizon_s, feed.provider.source)
        return any(row.at > as_of for row in series)

    def status(self, zone: str) -> ZoneStatus:
        """Whether ``zone``'s signal is ok or degraded, why, and how old its freshest data is."""
        as_of = self._clock()
        feed = self.feeds.get(zone)
        if feed is None:
            return ZoneStatus(zone, SYNTHETIC, DEGRADED, "zone not configured; using the built-in synthetic "
                              "signal", None)
        health = self.health(zone)
        try:
            age_s = self._freshest_age_s(feed, as_of)
        except SQLAlchemyError as exc:
            return ZoneStatus(zone, feed.provider.source, DEGRADED,
                              f"carbon cache unreadable ({exc.__class__.__name__})", None, health.last_success_at)
        reasons = []
        if health.error:
            reasons.append(health.error)
        if age_s is None:
            reasons.append("no data cached yet")
        elif age_s > self.policy.stale_after_s:
            reasons.append(f"freshest data is {age_s / 3600:.1f} h old")
        if reasons:
            reasons.append("using " + ("cached actuals and a forecast from the zone's history" if age_s is not None
                                       else "the fallback value" if feed.fallback_g_per_kwh is not None
                                       else "the built-in synthetic signal"))
        index = health.signal_index.percent if health.signal_index else None
        return ZoneStatus(zone, feed.provider.source, DEGRADED if reasons else OK, "; ".join(reasons), age_s,
                          health.last_success_at, index,
                          {"region": feed.region, **({"error_kind": health.error_kind} if health.error_kind
                                                     else {})})

    def statuses(self) -> list[ZoneStatus]:
        return [self.status(zone) for zone in self.zones]

    def _cached_reading(self, feed: ZoneFeed, at: datetime, as_of: datetime) -> IntensityReading | None:
        source = feed.provider.source
        actual = self.cache.actual_at(feed.zone, min(at, as_of), as_of, source)
        if at <= as_of and actual is not None and (at - actual.at).total_seconds() <= self.policy.actual_max_gap_s:
            return _reading(actual, at)
        forecast = self.cache.forecast_at(feed.zone, at, as_of, source)
        if forecast is not None:
            return _reading(forecast, at)
        profile = self._profile(feed.zone, as_of, source)
        if at.hour in profile:
            return IntensityReading(feed.zone, at, profile[at.hour], HISTORY_SOURCE_PREFIX + source, FORECAST)
        return None if actual is None else _reading(actual, at)

    def _profile(self, zone: str, as_of: datetime, source: str) -> dict[int, float]:
        slot = int(as_of.timestamp() // 300)
        cached = self._profiles.get(zone)
        if cached is None or cached[0] != slot:
            cached = (slot, self.cache.hourly_profile(zone, as_of, self.policy.history_days, source))
            self._profiles[zone] = cached
        return cached[1]

    def _freshest_age_s(self, feed: ZoneFeed, as_of: datetime) -> float | None:
        actual = self.cache.actual_at(feed.zone, as_of, as_of, feed.provider.source)
        if actual is not None:
            return (as_of - actual.at).total_seconds()
        series = self.cache.forecast_series(feed.zone, as_of, 0.0, feed.provider.source)
        return (as_of - series[0].issued_at).total_seconds() if series else None

    def _fallback(self, zone: str, at: datetime, value_g_per_kwh: float | None) -> IntensityReading:
        if value_g_per_kwh is not None:
            return IntensityReading(zone, at, value_g_per_kwh, FALLBACK_SOURCE, SYNTHETIC)
        return IntensityReading(zone, at, self._synthetic.intensity_g_per_kwh(zone, at.timestamp()), SYNTHETIC,
                                SYNTHETIC)


def _reading(row: CachedIntensity, at: datetime | None = None) -> IntensityReading:
    return IntensityReading(row.zone, row.at if at is None else at, row.intensity_g_per_kwh, row.source, row.basis)


def build_provider(config: ProviderConfig, transport: Transport, clock: Clock,
                   sleep: Callable[[float], None] = time.sleep) -> CarbonProvider:
    """The provider ``config`` describes, talking HTTP through ``transport``."""
    def http(public_url: str) -> HttpClient:
        return HttpClient(config.name, config.base_url or public_url, transport, timeout_s=config.timeout_s,
                          sleep=sleep, clock=clock)

    if config.kind == "electricitymaps":
        return ElectricityMapsProvider(http(ELECTRICITYMAPS_URL), config.token, config.emission_factor)
    if config.kind == "watttime":
        return WattTimeProvider(http(WATTTIME_URL), config.username, config.password, clock, config.signal_type)
    if config.kind == "ukcarbon":
        return UkCarbonProvider(http(UKCARBON_URL))
    if config.kind == "static":
        return StaticProvider(config.value_g_per_kwh)
    return TraceProvider(config.path, config.trace_basis, config.trace_offset_s)


def build_signal(config: CarbonConfig, sessions: sessionmaker[Session], clock: Clock, *,
                 transport: Transport | None = None, sleep: Callable[[float], None] = time.sleep,
                 policy: SignalPolicy = SignalPolicy()) -> ProviderSignal:
    """The daemon's signal for every configured zone; one provider instance per configured provider."""
    transport = transport or RequestsTransport()
    providers = {name: build_provider(provider, transport, clock, sleep)
                 for name, provider in config.providers.items()}
    feeds = {}
    for zone, zone_config in config.zones.items():
        provider = providers[zone_config.provider]
        if isinstance(provider, UkCarbonProvider):
            regional_path(zone_config.region)  # a bad region id is a configuration error, found at start
        feeds[zone] = ZoneFeed(zone, provider, zone_config.region, zone_config.fallback_g_per_kwh)
    log.info("carbon signal: %s", ", ".join(f"{z} <- {f.provider.source} ({f.region})" for z, f in feeds.items()))
    return ProviderSignal(feeds, CarbonCache(sessions), clock, policy)
