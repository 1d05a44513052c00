"""The daemon's forecast per zone: a provider's forecast where it gives one, else the history model over the
cached actuals (``scheduler.carbon.history``), kept from tick to tick, and a new zone's shape prior from the
others; on real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from fakes import FakeClock
from sqlalchemy.exc import OperationalError
from test_carbon_cache import cache  # noqa: F401 (the fixture: a carbon cache on each backend)

import policies.history_forecast as history_forecast
from policies.history_forecast import HistoryForecast
from scheduler.carbon.grid import GridCarbon
from scheduler.carbon.history import CachedHistory
from scheduler.carbon.providers.base import ACTUAL, FORECAST, IntensityPoint
from scheduler.carbon.providers.signal import ProviderSignal, SignalPolicy, ZoneFeed
from scheduler.carbon.signal import SignalForecast
from scheduler.store.carbon_cache import CarbonCache
from scheduler.store.engine import make_engine, make_session_factory

NOW = datetime(2026, 3, 6, 9, 10, tzinfo=timezone.utc)  # a Friday: tomorrow is a weekend day
H = timedelta(hours=1)
WEEKS = 5


class Named:
    """A provider as the signal sees it: only its name (the test fills the cache itself)."""

    def __init__(self, source: str):
        self.source = source


def pattern(at: datetime) -> float:
    """A daily cycle (peak at 18:00 UTC) and quieter weekends."""
    daily = 300.0 + 100.0 * np.cos(2 * np.pi * (at.hour - 18) / 24)
    return float(daily - (120.0 if at.weekday() >= 5 else 0.0))




@pytest.fixture
def clock():
    return FakeClock(NOW)


@pytest.fixture
def signal(cache, clock):
    """DE: hourly actuals over five weeks, no provider forecast; FR: a day of actuals and a provider forecast."""
    start = NOW.replace(minute=0) - WEEKS * 7 * 24 * H
    hours = [start + k * H for k in range(WEEKS * 7 * 24 + 1)]
    cache.store("DE", "em", [IntensityPoint(at, pattern(at), ACTUAL, at) for at in hours])
    cache.store("FR", "em", [IntensityPoint(at, 50.0, ACTUAL, at) for at in hours[-24:]])
    issued = NOW.replace(minute=0)
    cache.store("FR", "em", [IntensityPoint(issued + k * H, 40.0 + k, FORECAST, issued) for k in range(72)])
    feeds = {zone: ZoneFeed(zone, Named("em"), zone) for zone in ("DE", "FR")}
    return ProviderSignal(feeds, cache, clock, SignalPolicy())


class Arrays:
    """The same actuals as an in-memory source: what the history model should learn from."""

    history_only = True

    def __init__(self, times_s: np.ndarray, values: np.ndarray, now_s: float):
        self.times_s, self.values, self.now_s = times_s, values, now_s

    def intensity(self, zone: str, t_s: float) -> float:
        return float(self.values[np.searchsorted(self.times_s, min(t_s, self.now_s), "right") - 1])

    def history_start_s(self, zone: str) -> float:
        return float(self.times_s[0])

    def history(self, zone: str, start_s: float, end_s: float):
        end_s = min(end_s, self.now_s)
        i = max(int(np.searchsorted(self.times_s, start_s, "right")) - 1, 0)
        j = int(np.searchsorted(self.times_s, end_s, "right"))
        times = self.times_s[i:j].copy()
        times[0] = start_s
        return times, self.values[i:j]


def test_actuals_are_one_series_from_the_value_in_force_and_never_a_forecast(cache, clock):
    cache.store("DE", "em", [IntensityPoint(NOW - h * H, 100.0 + h, ACTUAL, NOW - h * H) for h in (0, 1, 5, 6)])
    cache.store("DE", "em", [IntensityPoint(NOW - h * H, 900.0, FORECAST, NOW - 6 * H) for h in (2, 3, 4)])
    signal = ProviderSignal({"DE": ZoneFeed("DE", Named("em"), "DE")}, cache, clock, SignalPolicy())
    start_s = (NOW - 4.5 * H).timestamp()
    times, values = signal.actuals("DE", start_s, NOW.timestamp())
    assert times.tolist() == [start_s, (NOW - H).timestamp(), NOW.timestamp()]
    assert values.tolist() == [105.0, 101.0, 100.0]  # the gap holds the last actual before it
    assert signal.reading("DE", (NOW - 2 * H).timestamp()).intensity_g_per_kwh == 900.0  # where reading() would not
    early_s = (NOW - 9 * H).timestamp()
    assert signal.actuals("DE", early_s, (NOW - 5 * H).timestamp())[0][0] == early_s  # first value held before
    assert signal.history_start_s("DE") == (NOW - 6 * H).timestamp()
    assert signal.history_start_s("FR") is None


def test_a_zone_without_provider_forecast_gets_the_history_models_curve(signal, clock):
    now_s = NOW.timestamp()
    forecast = GridCarbon(signal, clock).forecast(now_s)
    assert forecast.learned("DE") and not forecast.learned("FR")
    end_s = now_s + 2 * 86400
    curve = forecast.curves(("DE",), end_s)[0]

    times, values = signal.actuals("DE", now_s - 60 * 86400, now_s)
    reference = HistoryForecast(Arrays(times, values, now_s))
    expected = reference.curve("DE", end_s)
    np.testing.assert_array_equal(curve.knots_s, expected.knots_s)
    np.testing.assert_allclose(curve.values, expected.values, rtol=1e-12)

    tomorrow = NOW.replace(hour=0, minute=0) + 24 * H  # a Saturday
    at = [(tomorrow + h * H + timedelta(minutes=30)).timestamp() for h in range(24)]
    learned = curve.value_at(np.array(at))
    truth = np.array([pattern(tomorrow + h * H) for h in range(24)])
    # the old path: the mean of each UTC hour over the last seven days (weekdays and weekend days alike)
    profile = np.array([r.intensity_g_per_kwh for r in signal.forecast("DE", 2 * 86400)])
    assert learned[18] - learned[6] > 150  # the daily cycle (200 g/kWh from trough to peak)
    assert np.abs(learned - truth).mean() < 0.5 * np.abs(profile[15:39] - truth).mean()
    assert set(forecast.forecast("DE", now_s, end_s)[1]) <= set(curve.values)


def test_a_zone_with_a_provider_forecast_is_unchanged(signal, clock, monkeypatch):
    fits = count_fits(monkeypatch)
    now_s = NOW.timestamp()
    end_s = now_s + 36 * 3600
    with_model = GridCarbon(signal, clock).forecast(now_s)
    without = SignalForecast(signal, now_s)
    curve, expected = with_model.curves(("FR",), end_s)[0], without.curve("FR", end_s)
    np.testing.assert_array_equal(curve.knots_s, expected.knots_s)
    np.testing.assert_array_equal(curve.values, expected.values)
    assert curve.value_at(now_s + 3 * 3600 + 60) == 43.0  # the provider's value
    assert with_model.forecast("FR", now_s, end_s)[1].tolist() == without.forecast("FR", now_s, end_s)[1].tolist()
    assert fits == []


def test_the_model_refits_once_a_day_and_reads_history_once_per_step(signal, clock, monkeypatch):
    fits = count_fits(monkeypatch)
    reads: list[float] = []  # the span of each history read
    actuals = signal.actuals

    def counted(zone, start_s, end_s):
        reads.append(end_s - start_s)
        return actuals(zone, start_s, end_s)

    monkeypatch.setattr(signal, "actuals", counted)
    grid = GridCarbon(signal, clock)
    clock.now = NOW.replace(minute=0)
    for _ in range(24):  # two hours of five-minute ticks: four 30-minute steps
        now_s = clock.now.timestamp()
        grid.forecast(now_s).curves(("DE", "FR"), now_s + 86400)
        clock.advance(minutes=5)
    assert fits == ["fit_weights"]  # DE's five weeks: the ridge model, fitted once
    assert len(reads) == 5  # each step's recent week, and the fit's weeks
    assert sum(span > 30 * 86400 for span in reads) == 1
    clock.now = NOW + 24 * H
    now_s = clock.now.timestamp()
    grid.forecast(now_s).curves(("DE",), now_s + 86400)
    assert fits == ["fit_weights", "fit_weights"]  # a new day: refitted


def count_fits(monkeypatch) -> list[str]:
    """Record each fit of the history model's weights (ridge or cold-start blend)."""
    fits: list[str] = []

    def counted(name: str):
        fit = getattr(history_forecast, name)

        def counting(*args, **kwargs):
            fits.append(name)
            return fit(*args, **kwargs)
        return counting

    for name in ("fit_weights", "fit_blend"):
        monkeypatch.setattr(history_forecast, name, counted(name))
    return fits


def test_an_unreadable_cache_falls_back_for_the_tick_and_fits_nothing(signal, clock, monkeypatch):
    fits = count_fits(monkeypatch)
    actuals = signal.actuals

    def unreadable(zone, start_s, end_s):
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(signal, "actuals", unreadable)
    grid = GridCarbon(signal, clock)
    now_s = NOW.timestamp()
    forecast = grid.forecast(now_s)
    curve = forecast.curves(("DE",), now_s + 86400)[0]
    expected = SignalForecast(signal, now_s).curve("DE", now_s + 86400)
    np.testing.assert_array_equal(curve.values, expected.values)  # the signal's own fill-in, this tick
    assert not forecast.learned("DE") and fits == []
    monkeypatch.setattr(signal, "actuals", actuals)
    clock.advance(minutes=5)
    forecast = grid.forecast(clock.now.timestamp())
    forecast.curves(("DE",), now_s + 86400)
    assert forecast.learned("DE") and fits == ["fit_weights"]  # readable again: the model, fitted on the history


# The shape prior: a new zone borrows the relative week of the zones past their cold start.

def relative_pattern_week() -> np.ndarray:
    """``pattern``'s relative intensity by hour of the week from Monday 00:00 UTC (each hour over its week's mean)."""
    monday = datetime(2026, 3, 2, tzinfo=timezone.utc)
    week = np.array([pattern(monday + h * H) for h in range(168)])
    return week / week.mean()


def store_actuals(cache, zone: str, since: datetime, value) -> None:
    hours = [since + k * H for k in range(int((NOW - since) / H) + 1)]
    cache.store(zone, "em", [IntensityPoint(at, value(at), ACTUAL, at) for at in hours])


def provider_signal(cache, clock, zones) -> ProviderSignal:
    return ProviderSignal({zone: ZoneFeed(zone, Named("em"), zone) for zone in zones}, cache, clock, SignalPolicy())


@pytest.fixture
def new_zone_signal(cache, clock):
    """DE: five weeks of hourly actuals; NL: the last week's (since last Friday 09:00) at half DE's values, so its
    shape is DE's; neither has a provider forecast."""
    store_actuals(cache, "DE", NOW.replace(minute=0) - WEEKS * 7 * 24 * H, pattern)
    store_actuals(cache, "NL", NOW.replace(minute=0) - 7 * 24 * H, lambda at: 0.5 * pattern(at))
    return provider_signal(cache, clock, ("DE", "NL"))


def test_a_new_zone_gets_the_relative_week_of_a_zone_past_its_cold_start(new_zone_signal):
    source = CachedHistory(new_zone_signal)
    source.now_s = NOW.timestamp()
    prior = source.shape_prior("NL")
    assert prior is not None and prior.step_s == 3600.0
    saturday_noon, friday_noon = datetime(2026, 3, 7, 12, tzinfo=timezone.utc), datetime(2026, 3, 6, 12,
                                                                                          tzinfo=timezone.utc)
    monday = datetime(2026, 3, 2, tzinfo=timezone.utc)
    at = np.array([(monday + h * H + timedelta(minutes=30)).timestamp() for h in range(168)])
    np.testing.assert_allclose(prior.at(at), relative_pattern_week(), rtol=1e-12)
    assert prior.at(saturday_noon.timestamp()) < prior.at(friday_noon.timestamp()) - 0.3  # the weekend dip
    assert source.shape_prior("DE") is None  # past its own cold start: its own history serves


def test_no_prior_without_another_zone_past_its_cold_start(cache, clock):
    store_actuals(cache, "DE", NOW.replace(minute=0) - 3 * 7 * 24 * H, pattern)  # three weeks: still cold
    store_actuals(cache, "NL", NOW.replace(minute=0) - 2 * 24 * H, pattern)
    source = CachedHistory(provider_signal(cache, clock, ("DE", "NL", "PL")))  # PL: nothing cached
    source.now_s = NOW.timestamp()
    assert source.shape_prior("NL") is None and source.shape_prior("DE") is None
    assert source.shape_prior("PL") is None


def test_an_unreadable_cache_gives_no_prior(clock, tmp_path):
    missing = make_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'cache.db'}")  # cannot be opened
    source = CachedHistory(provider_signal(CarbonCache(make_session_factory(missing)), clock, ("DE", "NL")))
    source.now_s = NOW.timestamp()
    assert source.shape_prior("NL") is None
    missing.dispose()


def test_the_prior_is_read_once_a_day_and_a_failed_read_leaves_the_day_without_one(new_zone_signal, monkeypatch):
    reads: list[str] = []
    actuals = new_zone_signal.actuals
    failing = [True]

    def counted(zone, start_s, end_s):
        reads.append(zone)
        if failing[0]:
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return actuals(zone, start_s, end_s)

    monkeypatch.setattr(new_zone_signal, "actuals", counted)
    source = CachedHistory(new_zone_signal)
    source.now_s = NOW.timestamp()
    assert source.shape_prior("NL") is None and reads == ["DE"]
    failing[0] = False
    source.now_s += 3 * 3600
    # the day's model fitted its blend without a prior: it keeps none until the next day
    assert source.shape_prior("NL") is None and reads == ["DE"]
    source.now_s += 86400
    assert source.shape_prior("NL") is not None and reads == ["DE", "DE"]
    source.now_s += 1800
    assert source.shape_prior("NL") is not None and reads == ["DE", "DE"]  # memoised for the day


class WithPrior(Arrays):
    """An in-memory source whose history begins at its first value and that gives a shape prior."""

    def __init__(self, times_s, values, now_s, start_s, prior):
        super().__init__(times_s, values, now_s)
        self.start_s, self.prior = start_s, prior

    def history_start_s(self, zone: str) -> float:
        return self.start_s

    def shape_prior(self, zone: str):
        return self.prior


def test_the_daemons_model_forecasts_a_new_zone_with_the_prior(new_zone_signal, clock):
    now_s = NOW.timestamp()
    forecast = GridCarbon(new_zone_signal, clock).forecast(now_s)
    assert forecast.learned("NL")
    end_s = now_s + 2 * 86400
    curve = forecast.curves(("NL",), end_s)[0]

    start_s = new_zone_signal.history_start_s("NL")
    times, values = new_zone_signal.actuals("NL", now_s - 60 * 86400, now_s)
    prior = CachedHistory(new_zone_signal)
    prior.now_s = now_s
    with_prior = HistoryForecast(WithPrior(times, values, now_s, start_s, prior.shape_prior("NL")))
    without = HistoryForecast(WithPrior(times, values, now_s, start_s, None)).curve("NL", end_s)
    expected = with_prior.curve("NL", end_s)
    np.testing.assert_array_equal(curve.knots_s, expected.knots_s)
    np.testing.assert_allclose(curve.values, expected.values, rtol=1e-12)

    tomorrow = NOW.replace(hour=0, minute=0) + 24 * H  # a Saturday: NL has seen one weekend, DE five
    at = np.array([(tomorrow + h * H + timedelta(minutes=30)).timestamp() for h in range(24)])
    truth = np.array([0.5 * pattern(tomorrow + h * H) for h in range(24)])
    learned, plain = curve.value_at(at), without.value_at(at)
    assert learned.mean() < plain.mean() - 20  # the weekend dip (60 g/kWh at NL's scale), borrowed from DE
    assert np.abs(learned - truth).mean() < 0.5 * np.abs(plain - truth).mean()
