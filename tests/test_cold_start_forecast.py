"""The history model's cold start (policies.history_forecast): a calibrated convex blend of forecasts that need
only a day of history, fitted on the errors seen so far, never reading the future nor before the history."""

import numpy as np
import pytest

from policies.builtin import create_policy
from policies.decisions import Wait
from policies.forecast import ForecastBase
from policies.snapshot import JobRequest, Snapshot, ZonePool
from policies.history_forecast import (BAND_EDGES_S, BLEND_PERSISTENCE, COLD_START_S, DAY_S, HISTORY_S,
                                       N_BLENDED, N_BLENDED_WITH_PRIOR, WEEK_S, HistoryForecast, ShapePrior,
                                       _blended, _features, _features_looked_up, _prior_ratios,
                                       _simplex_least_squares, fit_blend)

STEP_S = 1800.0


def daily_trace(days: float, seed: int = 0, start_s: float = 0.0):
    """A strong daily shape on a level that drifts from day to day, with noise: what persistence gets wrong is the
    noise of the one day it copies."""
    t = np.arange(start_s, start_s + days * DAY_S, STEP_S)
    rng = np.random.default_rng(seed)
    level = 300 + np.repeat(np.cumsum(rng.normal(0, 15, int(np.ceil(days)) + 1)), int(DAY_S / STEP_S))[:len(t)]
    return t, np.maximum(level + 120 * np.sin(2 * np.pi * t / DAY_S) + rng.normal(0, 30, len(t)), 1.0)


class Source:
    """A history-only forecast over a trace that refuses to show anything after ``now_s``."""

    history_only = True

    def __init__(self, t, values, start_s):
        self.t, self.values, self.start_s, self.now_s = t, values, start_s, 0.0

    def history_start_s(self, zone):
        return self.start_s

    def history(self, zone, start_s, end_s):
        assert end_s <= self.now_s + 1e-6, "read the future"
        i = max(int(np.searchsorted(self.t, start_s, "right")) - 1, 0)
        j = max(int(np.searchsorted(self.t, end_s, "right")), i + 1)
        return np.concatenate(([start_s], self.t[i + 1:j])), self.values[i:j]

    def intensity(self, zone, t_s):
        assert t_s <= self.now_s + 1e-6, "read the future"
        return float(self.values[max(int(np.searchsorted(self.t, t_s, "right")) - 1, 0)])


def curve_at(source, model, now_s, end_s):
    source.now_s = model.now_s = now_s
    return model.curve("Z", end_s)


def test_the_blend_beats_persistence_after_a_few_days():
    t, values = daily_trace(12)
    source = Source(t, values, 0.0)
    model = HistoryForecast(source)
    blend, persistence = [], []
    for now in np.arange(4 * DAY_S, 10 * DAY_S, DAY_S / 4):
        curve = curve_at(source, model, now, now + DAY_S)
        future = t[(t > now) & (t < now + DAY_S)]
        truth = values[np.searchsorted(t, future)]
        blend.append(np.abs(curve.value_at(future + 1) - truth).mean())
        persistence.append(np.abs(values[np.searchsorted(t, future - DAY_S)] - truth).mean())
    assert np.mean(blend) < 0.9 * np.mean(persistence)


def test_a_forecast_is_the_same_whatever_the_future_holds():
    t, values = daily_trace(10)
    now = 5 * DAY_S + 3 * 3600.0
    other = values.copy()
    other[t > now] = 5.0  # a future nothing like the past
    curves = []
    for v in (values, other):
        source = Source(t, v, 0.0)
        model = HistoryForecast(source)
        for earlier in np.arange(DAY_S, now, DAY_S / 2):  # a model that has run since the start, memo and all
            curve_at(source, model, earlier, earlier + DAY_S)
        curves.append(curve_at(source, model, now, now + 2 * DAY_S))
    assert np.array_equal(curves[0].values, curves[1].values)


def test_nothing_before_the_history_start_is_read():
    """Before its start a source holds its first value (the simulator's traces) or anything else: the same
    forecast either way."""
    t, values = daily_trace(8, start_s=-3 * DAY_S)
    held = values.copy()
    held[t < 0] = values[t >= 0][0]
    curves = []
    for v in (values, held):
        source = Source(t, v, 0.0)
        curves.append(curve_at(source, HistoryForecast(source), 3 * DAY_S, 4 * DAY_S).values)
    assert np.array_equal(curves[0], curves[1])
    # without the start the model reads the days before it: the test can tell
    source = Source(t, values, 0.0)
    source.history_start_s = lambda zone: -np.inf
    assert not np.array_equal(curve_at(source, HistoryForecast(source), 3 * DAY_S, 4 * DAY_S).values, curves[0])


def test_after_the_cold_start_the_ridge_model_ignores_the_start():
    """From ``COLD_START_S`` of history on, the ridge model forecasts as it did before sources said where their
    history begins (it reads the held first value too, even while its look-back still reaches before it)."""
    t, values = daily_trace(COLD_START_S / DAY_S + 4, start_s=-DAY_S)
    now = COLD_START_S + DAY_S
    assert now - HISTORY_S < 0.0
    known, unknown = Source(t, values, 0.0), Source(t, values, 0.0)
    unknown.history_start_s = lambda zone: -np.inf
    a = curve_at(known, HistoryForecast(known), now, now + DAY_S).values
    b = curve_at(unknown, HistoryForecast(unknown), now, now + DAY_S).values
    assert np.array_equal(a, b)


def test_blend_weights_are_convex_per_band_and_persistence_without_examples():
    t, values = daily_trace(6)
    weights = fit_blend(t, values, 5 * DAY_S, 0.0)
    assert weights.shape == (len(BAND_EDGES_S) + 1, N_BLENDED)
    assert (weights >= 0).all() and np.allclose(weights.sum(axis=1), 1.0)
    assert not np.allclose(weights[:3], BLEND_PERSISTENCE)  # learned where there were examples
    # a day of history: no example has a known target yet
    assert np.array_equal(fit_blend(t, values, DAY_S, 0.0), np.tile(BLEND_PERSISTENCE, (len(weights), 1)))


def test_simplex_least_squares_recovers_a_convex_blend():
    rng = np.random.default_rng(3)
    x = rng.uniform(100, 400, (500, 4))
    y = x @ np.array([0.3, 0.0, 0.7, 0.0])
    w = _simplex_least_squares(x.T @ x / len(y), x.T @ y / len(y))
    assert w == pytest.approx([0.3, 0.0, 0.7, 0.0], abs=0.02)
    w = _simplex_least_squares(x.T @ x / len(y), x.T @ (2 * y) / len(y))  # twice the truth: the best convex blend
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    # the unconstrained optimum is far outside: the best convex blend is on the simplex's edge, checked densely
    y = x @ np.array([1.5, -0.5, 0.0, 0.0])
    gram, xty = x.T @ x / len(y), x.T @ y / len(y)
    w = _simplex_least_squares(gram, xty)
    grid = np.array([[a, b, c, 1 - a - b - c] for a in np.linspace(0, 1, 21) for b in np.linspace(0, 1, 21)
                     for c in np.linspace(0, 1, 21) if a + b + c <= 1 + 1e-12])
    values = np.einsum("ij,jk,ik->i", grid, gram, grid) - 2 * grid @ xty
    assert w @ gram @ w - 2 * w @ xty <= values.min() + 1e-9 * abs(values.min())


def test_features_from_a_start_match_on_and_off_the_grid():
    rng = np.random.default_rng(0)
    times = np.sort(rng.choice(np.arange(0, 20 * DAY_S, 900.0), 1500, replace=False))
    values = rng.uniform(0, 500, 1500)
    start = float(times[0])
    issued = np.floor(rng.uniform(start + 2 * 3600.0, start + 10 * DAY_S, 300) / 1800) * 1800
    target = issued + 1800 * rng.integers(1, 200, 300) - 900
    ahead = target - issued
    slow = _features_looked_up(times, values, issued, target, np.maximum(np.ceil(ahead / DAY_S), 1.0),
                               np.maximum(np.ceil(ahead / WEEK_S), 1.0), start)
    assert np.allclose(_features(times, values, issued, target, start), slow, rtol=1e-12, atol=1e-9)
    # a week back before the start: the profile stands in for the last week
    early = (target - np.maximum(np.ceil(ahead / WEEK_S), 1.0) * WEEK_S) < start
    assert early.any() and np.array_equal(slow[early, 3], slow[early, 2])


def weekly_trace(days: float, seed: int = 0):
    """A daily shape whose weekends (days 5 and 6 of each week) run at 60 % of the weekdays, with noise."""
    t, values = daily_trace(days, seed)
    return t, np.where(t // DAY_S % 7 >= 5, 0.6, 1.0) * values


class PriorSource(Source):
    def __init__(self, t, values, start_s, prior):
        super().__init__(t, values, start_s)
        self.prior = prior

    def shape_prior(self, zone):
        return self.prior


def test_a_shape_prior_repeats_from_its_origin():
    prior = ShapePrior(origin_s=-3600.0, step_s=3600.0, relative=np.array([1.0, 2.0, 3.0]))
    assert prior.at(np.array([-3600.0, -1.0, 0.0, 3600.0, 7200.0, -7200.0])).tolist() == [1, 1, 2, 3, 1, 3]
    with pytest.raises(ValueError):
        ShapePrior(0.0, 3600.0, np.array([1.0, 0.0]))


def test_a_shape_prior_of_the_week_helps_before_a_week_is_known():
    """In the first week persistence forecasts Saturday from Friday; a prior that knows the day's shape (which
    earns it weight on the weekdays) and that weekends run lower (by more than they do here: only its shape
    matters, and roughly) makes the blend's forecasts over the first weekend closer."""
    t, values = weekly_trace(8)
    week = np.arange(0.0, WEEK_S, STEP_S)
    relative = (1 + 0.4 * np.sin(2 * np.pi * week / DAY_S)) * np.where(week // DAY_S >= 5, 0.5, 1.1)
    errors = []
    for prior in (None, ShapePrior(0.0, STEP_S, relative)):
        source = PriorSource(t, values, 0.0, prior)
        model = HistoryForecast(source)
        error = []
        for now in np.arange(3 * DAY_S, 5 * DAY_S, DAY_S / 4):  # Thursday and Friday, two days ahead
            curve = curve_at(source, model, now, now + 2 * DAY_S)
            future = t[(t > now) & (t < now + 2 * DAY_S)]
            truth = values[np.searchsorted(t, future)]
            error.append(np.abs(curve.value_at(future + 1) - truth).mean())
        errors.append(np.mean(error))
    assert errors[1] < 0.8 * errors[0]


def test_blend_weights_with_a_prior_are_convex_and_persistence_without_examples():
    t, values = weekly_trace(6)
    prior = ShapePrior(0.0, DAY_S, np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.6]))
    weights = fit_blend(t, values, 5 * DAY_S, 0.0, prior)
    assert weights.shape == (len(BAND_EDGES_S) + 1, N_BLENDED_WITH_PRIOR)
    assert (weights >= 0).all() and np.allclose(weights.sum(axis=1), 1.0)
    assert weights[:3, N_BLENDED:].sum() > 0  # the prior's forecasts are used where they help
    persistence = np.zeros(N_BLENDED_WITH_PRIOR)
    persistence[0] = 1.0
    assert np.array_equal(fit_blend(t, values, DAY_S, 0.0, prior), np.tile(persistence, (len(weights), 1)))


def test_a_flat_prior_reshapes_nothing_and_a_shaped_one_uses_only_known_days():
    """The reshaped forecasts are the present level, yesterday and the profile times the prior's ratios: 1 for a
    flat prior; for a shaped one, the profile's ratio is over the known days only (two days of history here)."""
    t, values = weekly_trace(3)
    issued = np.full(96, 2 * DAY_S + 3600.0)
    target = issued + 1800.0 * np.arange(1, 97) - 900.0
    x = _features(t, values, issued, target, 0.0)
    level = np.full(96, values[np.searchsorted(t, issued[0])])
    flat = _blended(x, level, _prior_ratios(ShapePrior(0.0, DAY_S, np.ones(7)), issued, target, 0.0))
    assert np.array_equal(flat[:, N_BLENDED:], flat[:, [4, 0, 1]])
    by_day = np.array([1.0, 2.0, 4.0, 8.0, 1.0, 1.0, 1.0])  # days 0, 1, 2, 3 of the trace
    shaped = _blended(x, level, _prior_ratios(ShapePrior(0.0, DAY_S, by_day), issued, target, 0.0))
    reshaped_profile = shaped[:, N_BLENDED + 2] / x[:, 2]
    # day 3 up to a day ahead: yesterday is day 2, the profile days 2, 1 and 0 (the days before 0 are unknown)
    day_ahead = (target >= 3 * DAY_S) & (target - issued < DAY_S)
    assert day_ahead.any() and np.allclose(reshaped_profile[day_ahead], 8.0 / np.mean([4.0, 2.0, 1.0]))
    # day 3 more than a day ahead: yesterday is day 1, the profile days 1 and 0
    beyond = (target >= 3 * DAY_S) & (target < 4 * DAY_S) & (target - issued > DAY_S)
    assert beyond.any() and np.allclose(reshaped_profile[beyond], 8.0 / np.mean([2.0, 1.0]))


class HourlyForecast(ForecastBase):
    """A history-only forecast from hourly values (what the policy sees, history and future alike) whose actual
    history begins at ``start_s``."""

    history_only = True

    def __init__(self, hourly, start_s):
        self.now_s, self.hourly, self.start_s = 0.0, np.asarray(hourly, dtype=float), start_s

    def history_start_s(self, zone):
        return self.start_s

    def _values(self, start_s, end_s):
        edges = np.arange(np.floor(start_s / 3600.0) * 3600.0, end_s, 3600.0)
        return np.maximum(edges, start_s), self.hourly[np.minimum((edges // 3600.0).astype(int), len(self.hourly) - 1)]

    def intensity(self, zone, t_s):
        return float(self._values(t_s, t_s + 1)[1][0])

    def history(self, zone, start_s, end_s):
        return self._values(start_s, min(end_s, self.now_s))

    def forecast(self, zone, start_s, end_s):
        return self._values(start_s, end_s)


@pytest.mark.parametrize("history_start_s,look_again_h", [
    (0.0, 6.0),  # the zone's cold start: six hours on at least
    (-COLD_START_S + 1.0, 6.0),  # its last second
    (-COLD_START_S, 4.0),  # past it: halfway (three hours on at least)
    (-np.inf, 4.0),  # a history with no known beginning
])
def test_a_wait_in_the_cold_start_is_looked_at_again_later(history_start_s, look_again_h):
    clean_at_8 = [400] * 8 + [100] * 2 + [400] * 20
    request = JobRequest(job_id="j", gpus=1, submitted_s=0.0, zones=("Z",), deadline_s=12 * 3600.0,
                         interruptible=False, expected_duration_s=3600.0, power_w=300.0)
    snapshot = Snapshot(now_s=0.0, waiting=(request,), gpus=(), pools=(ZonePool("Z", 4, 4),),
                        forecast=HourlyForecast(clean_at_8, history_start_s))
    (decision,) = create_policy("carbon-aware", history_model=False).decide(snapshot)
    assert isinstance(decision, Wait) and decision.deferred and "waiting 8.0 h" in decision.reason
    assert decision.retry_at_s == pytest.approx(look_again_h * 3600.0)
