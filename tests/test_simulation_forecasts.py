"""Forecast modes: perfect = actual, persistence exactly as simulation.md defines it, noisy seeded."""

import numpy as np
import pytest

from scheduler.errors import ForecastPeek, InputError
from scheduler.simulation.forecasts import make_forecast
from scheduler.simulation.inputs import Cluster, Zone

DAY = 86400.0
TIMES = np.arange(-3 * DAY, 5 * DAY, 900.0)
RNG = np.random.default_rng(7)
VALUES = 200 + 100 * np.sin(TIMES / DAY * 2 * np.pi) + RNG.normal(0, 20, len(TIMES)).clip(-150, 150)
CLUSTER = Cluster(0.0, (Zone("DE", 4, TIMES, VALUES), Zone("FR", 4, TIMES, VALUES / 5)))


def actual(t):
    return VALUES[np.searchsorted(TIMES, t, "right") - 1]


def value_in(times, values, t):
    return values[np.searchsorted(times, t, "right") - 1]


def test_perfect_is_the_actual_future():
    f = make_forecast("perfect", CLUSTER)
    f.now_s = 1000.0
    times, values = f.forecast("DE", 1000.0, 2 * DAY)
    for t in np.linspace(1000.0, 2 * DAY - 1, 97):
        assert value_in(times, values, t) == actual(t)


@pytest.mark.parametrize("now", [0.0, 12345.0, 1.5 * DAY + 450.0])
def test_persistence_is_same_time_on_the_last_known_day(now):
    f = make_forecast("persistence", CLUSTER)
    f.now_s = now
    times, values = f.forecast("DE", now, now + 3.2 * DAY)
    assert times[0] == now
    for tau in now + np.array([1.0, 899.0, 3600.0, DAY - 5, DAY + 7, 2.5 * DAY, 3.1 * DAY]):
        k = 1
        while tau - k * DAY > now:
            k += 1
        assert value_in(times, values, tau) == actual(tau - k * DAY), tau - now


def test_persistence_curve_integrates_the_same_values():
    f = make_forecast("persistence", CLUSTER)
    f.now_s = 4321.0
    times, values = f.forecast("DE", 4321.0, 4321.0 + DAY)
    curve = f.curve("DE", 4321.0 + DAY)
    widths = np.diff(np.append(times, 4321.0 + DAY))
    assert curve.integral(4321.0, 4321.0 + DAY) == pytest.approx(float(values @ widths))


def test_noisy_is_seeded_and_grows_with_the_horizon():
    def sample(seed):
        f = make_forecast("noisy:0.2", CLUSTER, seed=seed)
        f.now_s = 0.0
        return f.forecast("DE", 0.0, 2 * DAY)

    (t1, v1), (t2, v2), (_, v3) = sample(3), sample(3), sample(4)
    np.testing.assert_array_equal(v1, v2)
    assert not np.array_equal(v1, v3)
    truth = actual(t1)
    assert v1[0] == truth[0]  # the piece under way is known
    rel = np.abs(v1 / truth - 1)
    assert rel[t1 < 3600].mean() < rel[t1 > DAY].mean()
    assert 0.1 < rel[t1 > DAY].mean() < 0.25  # |N(0, 0.2)| has mean 0.16


def test_noisy_zero_is_perfect_and_history_is_actual():
    f = make_forecast("noisy:0", CLUSTER)
    f.now_s = DAY
    np.testing.assert_array_equal(f.forecast("FR", DAY, 2 * DAY)[1], make_forecast("perfect", CLUSTER).forecast(
        "FR", DAY, 2 * DAY)[1])
    times, values = f.history("DE", 0.0, 10 * DAY)
    assert times[-1] <= DAY and value_in(times, values, DAY - 1) == actual(DAY - 1)


def test_the_future_is_not_for_peeking_and_modes_are_checked():
    f = make_forecast("perfect", CLUSTER)
    f.now_s = 100.0
    assert f.intensity("DE", 100.0) == actual(100.0)
    with pytest.raises(ForecastPeek):
        f.intensity("DE", 5000.0)
    for bad in ("oracle", "noisy:", "noisy:-1"):
        with pytest.raises(InputError, match="perfect, persistence, noisy:REL_ERR"):
            make_forecast(bad, CLUSTER)
