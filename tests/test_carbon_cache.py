"""The carbon cache and the signal's fallbacks, on real SQLite and PostgreSQL (``db_url``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes import FakeClock

from scheduler.carbon.providers.base import ACTUAL, FORECAST, IntensityPoint
from scheduler.store.carbon_cache import CarbonCache
from scheduler.carbon.providers.refresh import refresh_zones
from scheduler.carbon.providers.signal import ProviderSignal, SignalPolicy, ZoneFeed
from scheduler.errors import ProviderUnavailable
from scheduler.store.engine import make_engine, make_session_factory, upgrade

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


@pytest.fixture
def cache(upgraded_db_url):
    engine = make_engine(upgraded_db_url)
    upgrade(engine)
    yield CarbonCache(make_session_factory(engine))
    engine.dispose()


def actual(at, value, issued_at=None):
    return IntensityPoint(at, value, ACTUAL, issued_at or at)


def forecast(at, value, issued_at):
    return IntensityPoint(at, value, FORECAST, issued_at)


def test_actuals_are_read_as_of_an_explicit_time_with_revisions(cache):
    assert cache.store("DE", "em", [actual(T0 - 2 * H, 300), actual(T0 - H, 310)]) == 2
    assert cache.store("DE", "em", [actual(T0 - H, 310, T0)]) == 0  # unchanged: not stored again
    assert cache.store("DE", "em", [actual(T0 - H, 330, T0 + H)]) == 1  # revised later
    assert cache.actual_at("DE", T0, as_of=T0).intensity_g_per_kwh == 310
    assert cache.actual_at("DE", T0, as_of=T0 + H).intensity_g_per_kwh == 330
    assert cache.actual_at("DE", T0 - 2 * H, as_of=T0).intensity_g_per_kwh == 300
    assert cache.actual_at("DE", T0 - 3 * H, as_of=T0) is None
    assert cache.actual_at("DE", T0, as_of=T0 - 2 * H - timedelta(seconds=1)) is None  # not yet known
    assert cache.actual_at("FR", T0, as_of=T0) is None
    assert cache.actual_at("DE", T0, as_of=T0, source="other") is None


def test_the_latest_issued_forecast_covering_a_time_wins(cache):
    early = [forecast(T0 + i * H, 100 + i, T0) for i in range(6)]
    late = [forecast(T0 + (2 + i) * H, 200 + i, T0 + 2 * H) for i in range(2)]
    assert cache.store("DE", "em", early) == 6
    assert cache.store("DE", "em", early) == 0  # the same batch fetched twice
    cache.store("DE", "em", late)
    assert cache.forecast_at("DE", T0 + 3.5 * H, as_of=T0 + 3 * H).intensity_g_per_kwh == 201
    assert cache.forecast_at("DE", T0 + 3.5 * H, as_of=T0 + H).intensity_g_per_kwh == 103  # late not issued yet
    assert cache.forecast_at("DE", T0 + 5 * H, as_of=T0 + 3 * H).intensity_g_per_kwh == 105  # late ends earlier
    assert cache.forecast_at("DE", T0 + 7.5 * H, as_of=T0 + 3 * H) is None  # nothing covers it
    series = cache.forecast_series("DE", T0 + 2.5 * H, 2 * 3600)
    assert [(r.at, r.intensity_g_per_kwh) for r in series] == [(T0 + 2 * H, 200), (T0 + 3 * H, 201)]


def test_actual_series_reads_exactly_the_cached_actuals_of_a_window(cache):
    hours = [0, 1, 2, 6, 7]  # 3-5: a gap in the actuals, where a forecast was cached
    cache.store("DE", "em", [actual(T0 + h * H, 100 + h) for h in hours])
    cache.store("DE", "em", [forecast(T0 + h * H, 900 + h, T0 + 2 * H) for h in range(3, 6)])
    cache.store("DE", "em", [actual(T0 + H, 150, T0 + 8 * H)])  # revised later
    cache.store("DE", "other", [actual(T0 + 4 * H, 5)])
    cache.store("FR", "em", [actual(T0 + 4 * H, 6)])
    series = cache.actual_series("DE", T0 + H, T0 + 6 * H, as_of=T0 + 7 * H, source="em")
    assert series == [(T0 + H, 101), (T0 + 2 * H, 102), (T0 + 6 * H, 106)]  # nothing from the gap
    assert cache.actual_series("DE", T0 + H, T0 + 6 * H, as_of=T0 + 8 * H, source="em")[0] == (T0 + H, 150)
    assert cache.actual_series("DE", T0, T0 + 7 * H, as_of=T0 + 8 * H)[3] == (T0 + 4 * H, 5)  # any source
    assert cache.actual_series("DE", T0 + 3 * H, T0 + 5 * H, as_of=T0 + 8 * H, source="em") == []
    assert cache.first_actual_at("DE", as_of=T0 + 8 * H, source="em") == T0
    assert cache.first_actual_at("DE", as_of=T0 - H, source="em") is None  # not yet known
    assert cache.first_actual_at("XX", as_of=T0 + 8 * H) is None


def test_hourly_profile_means_the_same_hour_over_recent_days(cache):
    days = [actual(T0 - d * 24 * H + h * H, 100 * d + h, T0 - d * 24 * H + h * H)
            for d in (1, 2, 3) for h in (0, 1)]
    cache.store("DE", "em", days)
    profile = cache.hourly_profile("DE", T0, days=7)
    assert profile == {12: 200.0, 13: 201.0}
    assert cache.hourly_profile("DE", T0, days=1.5) == {12: 100.0, 13: 101.0}


def test_prune_drops_only_old_forecasts(cache):
    cache.store("DE", "em", [forecast(T0 - 3 * 24 * H, 1, T0 - 4 * 24 * H), forecast(T0, 2, T0 - H),
                             actual(T0 - 3 * 24 * H, 3)])
    assert cache.prune_forecasts(T0 - 24 * H) == 1
    assert cache.actual_at("DE", T0, T0).intensity_g_per_kwh == 3
    assert cache.forecast_at("DE", T0, T0).intensity_g_per_kwh == 2


class FlakyProvider:
    """A provider whose answers the test sets; ``failing`` makes it raise ProviderUnavailable."""

    source = "flaky"

    def __init__(self):
        self.failing = False
        self.actual_points: list[IntensityPoint] = []
        self.forecast_points: list[IntensityPoint] = []

    def actuals(self, region, as_of, window_s):
        if self.failing:
            raise ProviderUnavailable(self.source, "GET /x: HTTP 503")
        return [p for p in self.actual_points if p.at <= as_of]

    def forecast(self, region, as_of, horizon_s):
        return list(self.forecast_points)


def test_signal_falls_back_from_actuals_to_forecast_to_history_to_fallback(cache):
    clock = FakeClock(T0)
    provider = FlakyProvider()
    provider.actual_points = [actual(T0 - d * 24 * H + h * H, 100 + h, T0 - d * 24 * H + h * H)
                              for d in (1, 2) for h in range(-6, 7)] + [actual(T0, 150)]
    provider.forecast_points = [forecast(T0 + h * H, 400 + h, T0) for h in range(0, 4)]
    feeds = {"DE": ZoneFeed("DE", provider, "DE"), "XX": ZoneFeed("XX", FlakyProvider(), "XX", 42.0)}
    signal = ProviderSignal(feeds, cache, clock, SignalPolicy())
    at = T0.timestamp()
    assert signal.status("DE").reason.startswith("no data cached yet")
    refresh_zones(signal, clock, ["DE"])
    assert signal.status("DE").state == "ok"
    assert (signal.reading("DE", at).basis, signal.reading("DE", at).intensity_g_per_kwh) == ("actual", 150)
    assert signal.reading("DE", at + 2 * 3600).intensity_g_per_kwh == 402  # provider forecast
    history = signal.reading("DE", at + 5 * 3600)  # past the forecast: the same hour on earlier days
    assert (history.source, history.basis, history.intensity_g_per_kwh) == ("history:flaky", "forecast", 105)
    persisted = signal.reading("DE", at + 10 * 3600)  # no forecast, no history for that hour: last actual
    assert (persisted.basis, persisted.intensity_g_per_kwh) == ("actual", 150)
    fallback = signal.reading("XX", at)
    assert (fallback.source, fallback.basis, fallback.intensity_g_per_kwh) == ("fallback", "synthetic", 42.0)
    assert signal.reading("NOWHERE", at).basis == "synthetic"
    assert signal.status("NOWHERE").state == "degraded"

    provider.failing = True
    clock.now = T0 + 4 * H
    outcome = refresh_zones(signal, clock, ["DE"])[0]
    assert outcome.error == "unavailable: flaky: GET /x: HTTP 503"
    status = signal.status("DE")
    assert (status.state, status.age_s) == ("degraded", 4 * 3600)
    assert status.reason.startswith("unavailable: flaky: GET /x: HTTP 503")
    assert signal.reading("DE", clock.now.timestamp() + 2 * 3600).source == "history:flaky"
    clock.now = T0 + 8 * H
    assert "freshest data is 8.0 h old" in signal.status("DE").reason


def test_a_restarted_signal_reads_what_the_last_one_cached(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    provider = FlakyProvider()
    provider.actual_points = [actual(T0, 123)]
    clock = FakeClock(T0 + timedelta(minutes=5))
    refresh_zones(ProviderSignal({"DE": ZoneFeed("DE", provider, "DE")},
                                 CarbonCache(make_session_factory(engine)), clock), clock)
    engine.dispose()
    engine = make_engine(db_url)
    provider.failing = True
    signal = ProviderSignal({"DE": ZoneFeed("DE", provider, "DE")}, CarbonCache(make_session_factory(engine)), clock)
    assert signal.intensity_g_per_kwh("DE", clock.now.timestamp()) == 123
    engine.dispose()
