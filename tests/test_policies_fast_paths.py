"""The compiled and vectorised searches behind carbon-aware agree with the plain ones they replace."""

import numpy as np
import pytest

from plain_plans import SlotGrid, best_starts
from policies.carbon_plan import slot_plans
from policies.carbon_search import best_start, integral_to, run_costs
from policies.forecast import IntensityCurve, ZoneCurves
from policies.history_forecast import (BAND_EDGES_S, DAY_S, FIT_HORIZON_S, MIN_EXAMPLES, N_FEATURES, PERSISTENCE,
                                      RIDGE, WEEK_S, _features, _features_looked_up, _features_zones, _lookup,
                                      fit_weights)


def random_curves(rng, n_zones=3, n_knots=200):
    """Curves on different knots, with values on a coarse ladder so that ties are common."""
    return [IntensityCurve(np.concatenate(([0.0], np.sort(rng.choice(np.arange(100, 1e5, 100.0), n_knots,
                                                                    replace=False)))),
                           rng.integers(0, 5, n_knots + 1) * 100.0, 2e5) for _ in range(n_zones)]


@pytest.mark.parametrize("seed", range(20))
def test_compiled_best_start_matches_best_starts_per_curve(seed):
    rng = np.random.default_rng(seed)
    curves = random_curves(rng)
    zc = ZoneCurves(curves)
    now = rng.uniform(0, 5e4)
    run, latest = rng.uniform(100, 2e4, 5), now + rng.uniform(-1e3, 3e4, 5)
    for z, curve in enumerate(curves):
        want_start, want_cost = best_starts(curve, now, latest, run)
        for i in range(5):
            start, cost = best_start(zc.knots_s, zc.cumulative, zc.values, z, now, latest[i], run[i])
            assert cost == pytest.approx(want_cost[i], rel=1e-9, abs=1e-6) and start == pytest.approx(want_start[i])


@pytest.mark.parametrize("seed", range(20))
def test_run_costs_match_the_plain_search_over_zones_and_caps(seed):
    rng = np.random.default_rng(100 + seed)
    curves = random_curves(rng)
    zc = ZoneCurves(curves)
    now = rng.uniform(0, 5e4)
    probe = now + 3600.0
    n_jobs = 4
    work = rng.uniform(100, 1e4, n_jobs)
    deadline = now + work * rng.uniform(0.8, 4.0, n_jobs)  # some too late for the slow caps, one maybe late at all
    speed = np.tile([1.0, 0.8, 0.5], (n_jobs, 1))
    g_per = np.tile([1.0, 0.7, 0.45], (n_jobs, 1))
    n_caps = np.array([3, 2, 3, 1])
    allowed = rng.random((n_jobs, len(curves))) < 0.7
    allowed[:, 0] = True
    now_g, now_cap, probe_g, best_g, best_cap, best_s = run_costs(
        zc.knots_s, zc.cumulative, zc.values, zc.integral_error, allowed, now, probe, deadline, work, speed, g_per,
        n_caps)
    for j in range(n_jobs):
        caps = [c for c in range(n_caps[j]) if deadline[j] - work[j] / speed[j, c] >= now or speed[j, c] >= 1.0]
        cheapest = np.inf  # over every allowed zone: zones that cannot beat the others may go unsearched (inf)
        for z, curve in enumerate(curves):
            if not allowed[j, z]:
                assert now_g[j, z] == best_g[j, z] == probe_g[j, z] == np.inf
                continue
            runs = {c: work[j] / speed[j, c] for c in caps}
            now_costs = {c: g_per[j, c] * curve.integral(now, now + runs[c]) for c in caps}
            assert now_g[j, z] == pytest.approx(min(now_costs.values()), rel=1e-9)
            assert now_costs[now_cap[j, z]] == pytest.approx(now_g[j, z], rel=1e-9)
            waiting = [g_per[j, c] * curve.integral(probe, probe + runs[c]) for c in caps
                       if deadline[j] - runs[c] >= probe]
            assert probe_g[j, z] == pytest.approx(min(waiting, default=np.inf), rel=1e-9)
            best = {c: g_per[j, c] * best_starts(curve, now, np.array([deadline[j] - runs[c]]),
                                                 np.array([runs[c]]))[1][0] for c in caps}
            cheapest = min(cheapest, *best.values())
            if best_g[j, z] == np.inf:
                continue
            assert best_g[j, z] == pytest.approx(min(best.values()), rel=1e-9, abs=1e-6)
            c = best_cap[j, z]
            late = max(deadline[j] - runs[c], now)
            assert now <= best_s[j, z] <= late
            assert g_per[j, c] * curve.integral(best_s[j, z], best_s[j, z] + runs[c]) == \
                pytest.approx(best_g[j, z], rel=1e-9, abs=1e-6)
        assert best_g[j].min() == pytest.approx(cheapest, rel=1e-9, abs=1e-6)


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


def test_integral_error_bounds_the_rounding_of_short_runs_far_from_the_curves_start():
    values = np.random.default_rng(1).uniform(50, 600, 5000)
    curve = IntensityCurve(np.concatenate(([-1e9], np.arange(1.0, 5000.0) * 3600.0)), values, 5000 * 3600.0)
    zc = ZoneCurves([curve])
    starts = np.random.default_rng(2).uniform(0, 4999 * 3600.0, 2000)
    looked = np.array([[integral_to(zc.knots_s, zc.cumulative, zc.values, 0, t) for t in ts]
                       for ts in (starts, starts + 60.0)])
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


def plain_fit_weights(times, values, fit_at_s):
    """The ridge fit per horizon band on every example at once (what ``fit_weights`` sums issue by issue)."""
    issues = fit_at_s - 6 * 3600.0 * np.arange(1, 169)
    offsets = 1800.0 * np.arange(1, int(FIT_HORIZON_S / 1800.0) + 1)
    issue_of, target_of = np.repeat(issues, len(offsets)), np.repeat(issues, len(offsets)) + np.tile(offsets, 168)
    usable = (target_of <= fit_at_s) & (issue_of - 2 * WEEK_S >= times[0])
    issue_of, target_of = issue_of[usable], target_of[usable]
    x, y = _features(times, values, issue_of, target_of), _lookup(times, values, target_of)
    bands = np.searchsorted(BAND_EDGES_S, target_of - issue_of)
    weights = np.tile(PERSISTENCE, (len(BAND_EDGES_S) + 1, 1))
    for band in range(len(weights)):
        xb, yb = x[bands == band], y[bands == band]
        if len(yb) >= MIN_EXAMPLES:
            gram = xb.T @ xb
            ridge = RIDGE * np.trace(gram) / N_FEATURES
            weights[band] = np.linalg.solve(gram + ridge * np.eye(N_FEATURES), xb.T @ yb + ridge * PERSISTENCE)
    return weights


def test_a_fit_from_the_sums_kept_of_earlier_days_matches_a_fit_from_scratch():
    rng = np.random.default_rng(2)
    times = np.arange(0, 120 * DAY_S, 3600.0)
    daily = 300 + 100 * np.sin(2 * np.pi * times / DAY_S) + 40 * (times // DAY_S % 7 >= 5)
    values = daily + rng.normal(0, 30, len(times))
    memo = {}
    for day in (57, 58, 59, 61, 90):  # from the history's start (too short for some issues), then day by day
        fit_at = day * DAY_S
        window = (times >= fit_at - 59 * DAY_S) & (times <= fit_at + 5 * 3600)  # the history a forecast reads
        want = plain_fit_weights(times[window], values[window], fit_at)
        np.testing.assert_allclose(fit_weights(times[window], values[window], fit_at, memo), want, rtol=1e-9)
        np.testing.assert_allclose(fit_weights(times[window], values[window], fit_at), want, rtol=1e-9)
        assert not np.allclose(want, PERSISTENCE)  # fitted, not the default
        # kept: the issue times of the fit window whose targets are all known, and no older ones
        assert all(fit_at - 42 * DAY_S <= issue <= fit_at - FIT_HORIZON_S for issue in memo) and len(memo) > 100


def test_zone_curves_merge_flat_knots_without_changing_integrals():
    from policies.forecast import IntensityCurve, ZoneCurves
    knots = np.arange(0, 48 * 1800.0 + 1, 1800.0)
    hourly = np.repeat(np.random.default_rng(2).uniform(0, 500, (2, 24)), 2, axis=1)
    curves = [IntensityCurve(knots[:-1], row, knots[-1]) for row in hourly]
    zc = ZoneCurves(curves)
    assert len(zc.knots_s) == 25
    t = np.linspace(0, knots[-1], 97)
    for r, c in enumerate(curves):
        looked = [integral_to(zc.knots_s, zc.cumulative, zc.values, r, x) for x in t]
        assert np.allclose(looked, c.integral(0.0, t), rtol=1e-12)
