"""The vectorised searches behind carbon-aware agree with the plain ones they replace."""

import numpy as np
import pytest

from plain_plans import SlotGrid, best_starts
from policies.carbon_plan import best_starts_pairs, edge_costs, slot_plans
from policies.forecast import IntensityCurve, ZoneCurves
from policies.history_forecast import _features, _features_looked_up, _features_zones, DAY_S, WEEK_S


def random_curves(rng, n_zones=3, n_knots=200):
    """Curves on different knots, with values on a coarse ladder so that ties are common."""
    return [IntensityCurve(np.concatenate(([0.0], np.sort(rng.choice(np.arange(100, 1e5, 100.0), n_knots,
                                                                    replace=False)))),
                           rng.integers(0, 5, n_knots + 1) * 100.0, 2e5) for _ in range(n_zones)]


@pytest.mark.parametrize("seed", range(20))
def test_pair_search_matches_best_starts_per_curve(seed):
    rng = np.random.default_rng(seed)
    curves = random_curves(rng)
    zc = ZoneCurves(curves)
    now = rng.uniform(0, 5e4)
    run, latest = rng.uniform(100, 2e4, 5), now + rng.uniform(-1e3, 3e4, 5)
    for z, curve in enumerate(curves):
        want_start, want_cost = best_starts(curve, now, latest, run)
        start, cost = best_starts_pairs(zc, np.full(5, z), now, latest, run)
        assert np.allclose(cost, want_cost, rtol=1e-9, atol=1e-6) and np.allclose(start, want_start)
    edges = edge_costs(zc, now, latest, run, now + 3600.0)
    late = np.maximum(latest, now)
    want = np.array([[c.integral(now, now + run), c.integral(late, late + run),
                      c.integral(now + 3600.0, now + 3600.0 + run)] for c in curves]).transpose(0, 2, 1)
    assert np.allclose(edges, want, atol=1e-6)


@pytest.mark.parametrize("seed", range(20))
def test_batched_slot_plans_match_the_slot_grid(seed):
    rng = np.random.default_rng(seed)
    curves = random_curves(rng)
    zc = ZoneCurves(curves)
    rows = (0, 2)
    now = rng.uniform(0, 5e4)
    ends = now + rng.uniform(1e3, 5e4, 4)
    need = np.stack([(ends - now) * f for f in (0.3, 0.5, 1.2)], axis=1)
    g_per = np.tile([1.0, 0.8, 0.5], (4, 1))
    for j, (cap, cost, plan) in enumerate(slot_plans(zc, rows, now, ends, need, g_per)):
        grid = SlotGrid([curves[r] for r in rows], now, ends[j])
        costs = g_per[j] * grid.integrals(need[j])
        assert cap == int(np.argmin(costs)) and cost == pytest.approx(costs.min(), rel=1e-9)
        want = grid.plan(need[j, cap])
        assert plan.integral == pytest.approx(want.integral, rel=1e-9, abs=1e-6)
        assert plan.first_run() == pytest.approx(want.first_run(), rel=1e-12)
        assert plan.marginal() == want.values[want.allotted_s > 0].max()


def test_lowest_many_matches_lowest():
    rng = np.random.default_rng(3)
    zc = ZoneCurves(random_curves(rng, 4, 300))
    every = np.arange(4)
    for _ in range(100):
        start = rng.uniform(0, 1e5)
        ends = start + rng.uniform(1, 3e4, int(rng.integers(1, 9)))  # few windows (slices) and many (the table)
        want = np.stack([zc.lowest(every, start, end) for end in ends], axis=1)
        assert np.array_equal(zc.lowest_many(start, ends), want)


def test_integral_error_bounds_the_rounding_of_short_runs_far_from_the_curves_start():
    values = np.random.default_rng(1).uniform(50, 600, 5000)
    curve = IntensityCurve(np.concatenate(([-1e9], np.arange(1.0, 5000.0) * 3600.0)), values, 5000 * 3600.0)
    zc = ZoneCurves([curve])
    starts = np.random.default_rng(2).uniform(0, 4999 * 3600.0, 2000)
    looked = zc.integral_to(None, np.stack((starts, starts + 60.0)))[0]
    exact = np.array([float(curve.value_at(t)) * 60.0 for t in starts])  # pieces are an hour: 60 s lies in one
    inside = (np.floor(starts / 3600.0) == np.floor((starts + 60.0) / 3600.0)) & (starts >= 3600.0)
    error = np.abs(looked[1] - looked[0] - exact)[inside]
    assert error.max() > 1e-9 * exact[inside].min()  # rounding a relative tolerance does not cover
    assert error.max() <= zc.integral_error


def test_features_on_the_grid_match_a_lookup_per_feature():
    rng = np.random.default_rng(0)
    times = np.sort(rng.choice(np.arange(0, 60 * DAY_S, 900.0), 3000, replace=False))
    values = rng.uniform(0, 500, 3000)
    issued = np.floor(rng.uniform(40 * DAY_S, 50 * DAY_S, 300) / 1800) * 1800
    target = issued + 1800 * rng.integers(1, 200, 300) - 900
    ahead = target - issued
    slow = _features_looked_up(times, values, issued, target, np.maximum(np.ceil(ahead / DAY_S), 1.0),
                               np.maximum(np.ceil(ahead / WEEK_S), 1.0))
    assert np.array_equal(_features(times, values, issued, target), slow)


def test_features_of_several_zones_match_one_zone_at_a_time():
    rng = np.random.default_rng(1)
    histories = []
    for _ in range(3):
        times = np.sort(rng.choice(np.arange(0, 60 * DAY_S, 900.0), 3000, replace=False))
        histories.append((times, rng.uniform(0, 500, 3000)))
    for issued in (45 * DAY_S, 45 * DAY_S + 1800, 45 * DAY_S + 17):  # the last is off the grid: the fallback
        target = issued + 1800 * np.arange(1, 200) - 900
        want = np.stack([_features(t, v, np.full(len(target), issued), target) for t, v in histories])
        assert np.array_equal(_features_zones(histories, issued, target), want)


def test_zone_curves_merge_flat_knots_without_changing_integrals():
    from policies.forecast import IntensityCurve, ZoneCurves
    knots = np.arange(0, 48 * 1800.0 + 1, 1800.0)
    hourly = np.repeat(np.random.default_rng(2).uniform(0, 500, (2, 24)), 2, axis=1)
    curves = [IntensityCurve(knots[:-1], row, knots[-1]) for row in hourly]
    zc = ZoneCurves(curves)
    assert len(zc.knots_s) == 25
    t = np.linspace(0, knots[-1], 97)
    for r, c in enumerate(curves):
        assert np.allclose(zc.integral_to(np.array([r]), t)[0], c.integral(0.0, t), rtol=1e-12)
