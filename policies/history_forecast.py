"""A forecast learned from history alone, for when the forecast on offer only replays yesterday.

For a target time tau issued at t (rounded down to the 30-minute grid, so it uses no more than what was known
at t), the features are what history says about tau:

- ``yesterday``: the value at the same time on the last known day (persistence);
- ``week_mean``: the mean of the last seven known days at that time of day (the daily profile);
- ``last_week``: the value at the same time on the last known week (the weekly profile: weekends);
- ``anomaly``: how far the value at t sits from its own seven-day profile (the recent level);
- ``trend``: the change over the last three hours.

Each horizon band (0-3 h, 3-12 h, 12-24 h, 24-48 h, beyond) has its own linear blend of these, fitted by ridge
least squares (pulled lightly towards plain persistence) once a day on the last six weeks of history.

A cold start (a new zone, a daemon just installed: less than ``COLD_START_S`` of the zone's actual history, as
the source's ``history_start_s`` says) has too little history for that fit: its free weights follow the noise
of a few days, and beyond 12 hours it forecast worse than persistence. Until then the forecast is a *calibrated
blend* of five forecasts that need only a day of history, each a forecast in its own right:

- persistence (``yesterday``); the daily profile of the days known (``week_mean``, one to seven days);
- ``last_week`` (the profile until a week is known); the profile moved to the present level
  (``week_mean + anomaly``); the present level itself.

A source may also give a *shape prior* for a zone (``shape_prior(zone)``: a ``ShapePrior``, the relative
intensity over a week by hour, learned elsewhere, e.g. from other zones' histories): the shape a grid's day and
week usually have, before the zone's own weekly profile is known. With one, three forecasts join the blend,
each a forecast above reshaped by the prior from the times its value is from to the target:

- the prior's shape at the present level (``level x prior(target) / prior(now)``);
- persistence reshaped (``yesterday x prior(target) / prior(the time yesterday's value is from)``: a Saturday
  forecast from a Friday is lowered as weekends usually are);
- the profile of the days known reshaped (``week_mean x prior(target) / the mean of the prior over those days``).

The blend weighs them by their errors on the zone's own days, as the others, so a prior that does not fit the
zone loses its weight. On the first four weeks from 6 January 2020 (benchmarks/cold_start.py, its prior the
mean week of six other European zones in 2021-22) the blend reached 47 % of the best possible reduction in DE
and 44 % in FR with the prior, 39 % and 38 % without; on the four weeks from 6 April 73 % and 60 % with,
74 % and 58 % without; from 6 July 83 % and 52 % with, 81 % and 51 % without. With the cold start's longer
wait before a deferred job is looked at again (``policies.plugins.carbon.window.COLD_RECHECK_MIN_S``): January
47 % and 46 % with, 39 % and 40 % without; April 73 % and 62 % with, 74 % and 60 % without; July 83 % and 54 %
with, 81 % and 53 % without. With the looks also on the forecast's 30-minute grid, January is 47 % and 46 % with,
40 % and 39 % without (April and July not measured again).

Per horizon band the weights are non-negative and sum to one (a convex blend, so it never extrapolates beyond
its forecasts), fitted once a day by least squares on the errors each forecast made over the history seen so far
(issued every hour over the last two weeks, from a day after the history's start, targets up to three days
ahead, only targets already known); a band with fewer than ``MIN_BLEND_EXAMPLES`` known targets is plain
persistence. The blend's features never read before the history's start (``_features``). The ridge model, from
four weeks on, reads the first value that a source holds before its start as history, as it did before sources
said where their history begins: its fits then start from flat examples that pull its weights towards ones
that keep a level, and without them it did worse (first four weeks from 6 January 2020, ridge model throughout:
31 % instead of 34 % of the best possible in DE, 35 % instead of 36 % in FR; DE+FR+GB on 8 GPUs per zone over
2020: 541 kg instead of 510).

Pure numpy, deterministic; the memo of fits and forecasts only avoids recomputing a pure function of the
history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from policies.forecast import CarbonForecast, ForecastBase, IntensityCurve

DAY_S = 86400.0
WEEK_S = 7 * DAY_S
GRID_S = 1800.0  # issue times and forecast pieces
LOOKUP_GRID_S = GRID_S / 2  # targets' midpoints: every time a forecast or a fit looks up lies on this grid
BAND_EDGES_S = np.array([3, 12, 24, 48]) * 3600.0
FIT_DAYS = 42  # issue times over the last six weeks
FIT_ISSUE_EVERY_S = 6 * 3600.0
FIT_HORIZON_S = 3 * DAY_S
HISTORY_S = FIT_DAYS * DAY_S + FIT_HORIZON_S + 2 * WEEK_S  # what one fit or forecast may look back on
FEATURES_BACK_S = WEEK_S + DAY_S  # what a forecast's features may look back on (a week), with a margin
MIN_EXAMPLES = 50
MIN_HISTORY_S = DAY_S  # of actual history before a blend example's issue time, for the fit to learn from it
# The cold start's blend: until the zone's actual history is this long. Simulated on the first four weeks from
# 6 January 2020 (Let's Wait Awhile DE and FR, no earlier history; benchmarks/cold_start.py), the ridge model
# reached 34 % and 36 % of the best possible reduction and this blend 39 % and 38 %. In an offline replay of the
# planner's rule on four-week windows from 6 January, 6 April and 6 July (an earlier version of the blend, its
# weights not solved exactly) the blend did better than the ridge model started cold in all six, its errors
# beyond 12 hours were smaller than the ridge model's, and last week's value among the blended forecasts helped
# the spring and summer windows on average. Four weeks, not six: on the congested DE+FR+GB year (traces from
# 20 December 2019) six weeks of blend cost 518.5 kg against the ridge model's 509.6, four weeks 509.1.
COLD_START_S = 4 * WEEK_S
MIN_BLEND_EXAMPLES = 20
BLEND_ISSUE_EVERY_S = 2 * GRID_S
BLEND_FIT_DAYS = 14  # issue times over the last two weeks at most: the fit's cost stays bounded
N_BLENDED = 5  # yesterday, profile, last week, profile at the present level, present level
N_BLENDED_WITH_PRIOR = 8  # and, reshaped by the prior: the present level, yesterday, the profile
BLEND_PERSISTENCE = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
# Forecasts reach at least this far, so one computed curve serves every job planned in the same grid step.
MIN_HORIZON_S = 4 * DAY_S
# Six weeks and a light pull towards persistence did better than three weeks and ten times the pull on the 2020
# traces of the benchmark (share of the best reduction, history only: DE 59.9 -> 67.3 %, GB 64.5 -> 68.4 %, FR
# 52.4 % either way).
RIDGE = 1e-3
N_FEATURES = 6  # constant, yesterday, week_mean, last_week, anomaly, trend
PERSISTENCE = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class ShapePrior:
    """The usual shape of a grid's intensity over a period (a week by hour, say), relative to its mean: what a
    cold start may assume before a zone's own profile is known. ``relative[k]`` holds from ``origin_s + k x
    step_s`` on the forecast's clock, repeating every ``len(relative) x step_s``."""

    origin_s: float
    step_s: float
    relative: np.ndarray

    def __post_init__(self):
        if not (self.step_s > 0 and len(self.relative) and np.all(np.asarray(self.relative) > 0)):
            raise ValueError("a shape prior needs a positive step and positive relative values")

    def at(self, t_s: np.ndarray) -> np.ndarray:
        """The relative intensity in force at each of ``t_s``."""
        k = np.floor((np.asarray(t_s, dtype=np.float64) - self.origin_s) / self.step_s).astype(np.int64)
        return np.asarray(self.relative, dtype=np.float64)[k % len(self.relative)]


class HistoryForecast(ForecastBase):
    """A ``CarbonForecast`` whose ``forecast`` comes from a model of ``source``'s history (never its forecast)."""

    history_only = False

    def __init__(self, source: CarbonForecast):
        self.source = source
        self.now_s = source.now_s
        self._weights: dict[tuple, np.ndarray] = {}  # (zone, day[, "blend"]) -> weights per band
        self._fit_sums: dict[str, dict] = {}  # zone -> fit_weights' memo, kept as long as this model (see there)
        self._curves: dict[str, tuple[float, IntensityCurve]] = {}  # zone -> (issue time, curve)

    def intensity(self, zone: str, t_s: float) -> float:
        return self.source.intensity(zone, t_s)

    def history(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        return self.source.history(zone, start_s, end_s)

    def forecast(self, zone: str, start_s: float, end_s: float) -> tuple[np.ndarray, np.ndarray]:
        curve = self.curve(zone, end_s)
        i = max(int(np.searchsorted(curve.times_s, start_s, "right")) - 1, 0)
        j = int(np.searchsorted(curve.times_s, end_s, "left"))
        return np.concatenate(([start_s], curve.times_s[i + 1:j])), curve.values[i:j].copy()

    def curve(self, zone: str, end_s: float) -> IntensityCurve:
        """The forecast for ``zone`` from now to at least ``end_s``; the same curve serves a whole grid step."""
        return self.curves((zone,), end_s)[0]

    def curves(self, zones: tuple[str, ...], end_s: float) -> list[IntensityCurve]:
        """``curve`` for each of ``zones``; the zones not yet forecast in this grid step are forecast together, in
        one vectorised evaluation, on one shared knot grid."""
        issued_s = np.floor(self.now_s / GRID_S) * GRID_S
        missing = []
        for zone in zones:
            cached = self._curves.get(zone)
            # cumulative integrals are offsets: a curve from before now serves any later window
            if cached is None or cached[0] != issued_s or cached[1].end_s < end_s:
                missing.append(zone)
        if missing:
            self._forecast_zones(tuple(dict.fromkeys(missing)), issued_s, max(end_s, issued_s + MIN_HORIZON_S))
        return [self._curves[zone][1] for zone in zones]

    def _forecast_zones(self, zones: tuple[str, ...], issued_s: float, end_s: float) -> None:
        day = int(issued_s // DAY_S)
        # the features look back at most a week before the issue time (before the history, its first value holds)
        histories = [self.source.history(zone, issued_s - FEATURES_BACK_S, issued_s) for zone in zones]
        starts = [self._start(zone) for zone in zones]
        targets = issued_s + GRID_S * np.arange(1, int(np.ceil((end_s - issued_s) / GRID_S)) + 1)
        mids = targets - GRID_S / 2
        cold = [issued_s - start < COLD_START_S for start in starts]
        # the ridge model reads the first value held before a start as history, as it always has (module docstring)
        x = _features_zones(histories, issued_s, mids, [s if c else -np.inf for s, c in zip(starts, cold)])
        bands = np.searchsorted(BAND_EDGES_S, mids - issued_s)
        if not any(cold):
            weights = np.stack([self._fit(zone, issued_s, day) for zone in zones])
            predicted = np.maximum(np.einsum("zij,zij->zi", x, weights[:, bands]), 0.0)
        else:
            predicted = np.empty((len(zones), len(targets)))
            for r, zone in enumerate(zones):
                if cold[r]:
                    level = _lookup(*histories[r], np.array([issued_s]))
                    prior = self._prior(zone)
                    weights = self._fit_blend(zone, issued_s, day, starts[r], prior)
                    blended = _blended(x[r], level, _prior_ratios(prior, issued_s, mids, starts[r]))
                    predicted[r] = np.maximum(np.einsum("ij,ij->i", blended, weights[bands]), 0.0)
                else:
                    predicted[r] = np.maximum(np.einsum("ij,ij->i", x[r], self._fit(zone, issued_s, day)[bands]), 0.0)
        predicted[:, 0] = [self.source.intensity(zone, self.now_s) for zone in zones]  # the piece we are in: known
        knots = np.concatenate(([issued_s], targets))
        cumulative = np.concatenate((np.zeros((len(zones), 1)), np.cumsum(predicted * np.diff(knots), axis=1)),
                                    axis=1)
        for r, zone in enumerate(zones):
            self._curves[zone] = (issued_s, IntensityCurve.from_parts(knots, predicted[r], cumulative[r]))

    def _start(self, zone: str) -> float:
        """Where ``zone``'s actual history begins, as the source says (a source that does not say: -inf)."""
        start = getattr(self.source, "history_start_s", None)
        return -np.inf if start is None else float(start(zone))

    def _prior(self, zone: str) -> ShapePrior | None:
        """``zone``'s shape prior, as the source gives it (a source that gives none: None)."""
        prior = getattr(self.source, "shape_prior", None)
        return None if prior is None else prior(zone)

    def _fit_blend(self, zone: str, issued_s: float, day: int, start_s: float,
                   prior: ShapePrior | None) -> np.ndarray:
        key = (zone, day, "blend")
        if key not in self._weights:
            times_s, values = self.source.history(zone, issued_s - COLD_START_S - FEATURES_BACK_S, issued_s)
            self._weights[key] = fit_blend(times_s, values, day * DAY_S, start_s, prior)
        return self._weights[key]

    def _fit(self, zone: str, issued_s: float, day: int) -> np.ndarray:
        key = (zone, day)
        if key not in self._weights:
            times_s, values = self.source.history(zone, issued_s - HISTORY_S, issued_s)
            self._weights[key] = fit_weights(times_s, values, day * DAY_S, self._fit_sums.setdefault(zone, {}))
        return self._weights[key]


def fit_weights(times_s: np.ndarray, values: np.ndarray, fit_at_s: float,
                memo: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
    """Blend weights per horizon band (rows), fitted on history up to ``fit_at_s``; persistence where data is short.

    The fit is ridge least squares on the examples' sums (per band: the Gram matrix of the features, their
    products with the targets, the count), which add up over issue times. ``memo`` (issue time -> its sums per
    band) keeps the sums of the issue times whose targets are all known: a fit a day later shares all but four of
    its issue times with this one, and over the same history their sums are the same. Give a memo only over a
    history that does not change where it is known (a simulation's trace; the daemon refits on a new model each
    day)."""
    issues = fit_at_s - FIT_ISSUE_EVERY_S * np.arange(1, int(FIT_DAYS * DAY_S / FIT_ISSUE_EVERY_S) + 1)
    issues = issues[issues - 2 * WEEK_S >= times_s[0]]
    n_bands = len(BAND_EDGES_S) + 1
    gram, xty, count = np.zeros((n_bands, N_FEATURES, N_FEATURES)), np.zeros((n_bands, N_FEATURES)), np.zeros(n_bands)
    new = issues if memo is None else issues[[issue not in memo for issue in issues.tolist()]]
    if len(new):
        sums = _issue_sums(times_s, values, new, fit_at_s)
        gram, xty, count = gram + sums[0].sum(axis=0), xty + sums[1].sum(axis=0), count + sums[2].sum(axis=0)
        if memo is not None:
            for k in np.flatnonzero(new + FIT_HORIZON_S <= fit_at_s):  # all its targets known: its sums are final
                memo[float(new[k])] = (sums[0][k], sums[1][k], sums[2][k])
    if memo is not None:
        kept = set(issues.tolist())
        for issue in [i for i in memo if i not in kept]:
            del memo[issue]  # older than the fit window (or than the history): never read again
        for issue in kept.difference(new.tolist()):
            g, t, c = memo[issue]
            gram, xty, count = gram + g, xty + t, count + c
    weights = np.tile(PERSISTENCE, (n_bands, 1))
    for band in range(n_bands):
        if count[band] >= MIN_EXAMPLES:
            ridge = RIDGE * np.trace(gram[band]) / N_FEATURES
            weights[band] = np.linalg.solve(gram[band] + ridge * np.eye(N_FEATURES), xty[band] + ridge * PERSISTENCE)
    return weights


def _issue_sums(times_s: np.ndarray, values: np.ndarray, issues: np.ndarray, fit_at_s: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per issue time and horizon band, over the examples with targets known at ``fit_at_s``: the Gram matrix of
    their features (issues x bands x 6 x 6), its products with the targets (issues x bands x 6), their count."""
    offsets = GRID_S * np.arange(1, int(FIT_HORIZON_S / GRID_S) + 1)
    issue_of = np.repeat(issues, len(offsets))
    target_of = issue_of + np.tile(offsets, len(issues))
    shape = (len(issues), len(offsets))
    x = _features(times_s, values, issue_of, target_of).reshape(*shape, N_FEATURES)
    known = (target_of <= fit_at_s).reshape(shape)
    y = np.where(known, _lookup(times_s, values, target_of).reshape(shape), 0.0)
    xk = x * known[..., None]
    edges = np.searchsorted(offsets, BAND_EDGES_S, "right")  # the offsets of band b: edges[b - 1] to edges[b]
    bounds = np.concatenate(([0], edges, [len(offsets)]))
    gram = np.stack([np.einsum("iok,iol->ikl", xk[:, a:b], x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    xty = np.stack([np.einsum("iok,io->ik", xk[:, a:b], y[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    count = np.stack([known[:, a:b].sum(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], 1).astype(np.float64)
    return gram, xty, count


def fit_blend(times_s: np.ndarray, values: np.ndarray, fit_at_s: float, start_s: float,
              prior: ShapePrior | None = None) -> np.ndarray:
    """The cold start's convex weights per horizon band (rows) over the forecasts of ``_blended`` (``N_BLENDED``,
    or ``N_BLENDED_WITH_PRIOR`` with a ``prior``), fitted on the history known at ``fit_at_s`` (it begins at
    ``start_s``); persistence where it is short."""
    first_issue_s = np.ceil(max(start_s + MIN_HISTORY_S, fit_at_s - BLEND_FIT_DAYS * DAY_S) / GRID_S) * GRID_S
    n = N_BLENDED if prior is None else N_BLENDED_WITH_PRIOR
    weights = np.tile(np.pad(BLEND_PERSISTENCE, (0, n - N_BLENDED)), (len(BAND_EDGES_S) + 1, 1))
    if first_issue_s >= fit_at_s:
        return weights
    issues = np.arange(first_issue_s, fit_at_s, BLEND_ISSUE_EVERY_S)
    mids = GRID_S * np.arange(1, int(FIT_HORIZON_S / GRID_S) + 1) - GRID_S / 2
    issue_of = np.repeat(issues, len(mids))
    target_of = issue_of + np.tile(mids, len(issues))
    known = target_of <= fit_at_s
    issue_of, target_of = issue_of[known], target_of[known]
    x = _blended(_features(times_s, values, issue_of, target_of, start_s), _lookup(times_s, values, issue_of),
                 _prior_ratios(prior, issue_of, target_of, start_s))
    y = _lookup(times_s, values, target_of)
    return _fit_per_band(weights, x, y, target_of - issue_of, MIN_BLEND_EXAMPLES,
                         lambda xb, yb: _simplex_least_squares(xb.T @ xb / len(yb), xb.T @ yb / len(yb)))


def _fit_per_band(weights: np.ndarray, x: np.ndarray, y: np.ndarray, horizons_s: np.ndarray, min_examples: int,
                  fit) -> np.ndarray:
    """``weights`` with each horizon band's row (``BAND_EDGES_S``) refitted by ``fit(x, y)`` on that band's
    examples, where it has at least ``min_examples``; the others keep their default row."""
    bands = np.searchsorted(BAND_EDGES_S, horizons_s)
    for band in range(len(weights)):
        rows = bands == band
        if rows.sum() >= min_examples:
            weights[band] = fit(x[rows], y[rows])
    return weights


def _blended(x: np.ndarray, level: np.ndarray, prior_ratios: tuple[np.ndarray, ...] | None = None
             ) -> np.ndarray:
    """The cold start's forecasts from ``_features`` rows and the level at each row's issue time: yesterday, the
    profile of the days known, last week, that profile at the present level, the present level; with a shape
    prior's ratios (``_prior_ratios``) also the present level, yesterday and the profile reshaped by it."""
    level = np.broadcast_to(level, x.shape[:-1])
    forecasts = [x[..., 1], x[..., 2], x[..., 3], x[..., 2] + x[..., 4], level]
    if prior_ratios is not None:
        from_now, from_yesterday, from_profile = prior_ratios
        forecasts += [level * from_now, x[..., 1] * from_yesterday, x[..., 2] * from_profile]
    return np.stack(forecasts, axis=-1)


def _prior_ratios(prior: ShapePrior | None, issued_s, target_s: np.ndarray, start_s: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The prior's relative intensity at each target over: that at its issue time; that where the ``yesterday``
    feature's value is from (the same time a day or more back); its mean over the days ``week_mean`` is the mean
    of (those of the seven from there back that are known). Where a feature falls back for want of history
    (``_features``), so does its ratio: to the issue time's. None without a prior."""
    if prior is None:
        return None
    issued = np.broadcast_to(np.asarray(issued_s, dtype=np.float64), target_s.shape)
    at_issue = prior.at(issued)
    yesterday_s = target_s - np.maximum(np.ceil((target_s - issued) / DAY_S), 1.0) * DAY_S
    profile_days_s = [yesterday_s - m * DAY_S for m in range(7)]
    known = [day_s >= start_s for day_s in profile_days_s]
    total = np.sum([np.where(k, prior.at(day_s), 0.0) for k, day_s in zip(known, profile_days_s)], axis=0)
    count = np.sum([k.astype(np.float64) for k in known], axis=0)
    at_target = prior.at(target_s)
    return (at_target / at_issue, at_target / np.where(known[0], prior.at(yesterday_s), at_issue),
            at_target / np.where(count > 0, total / np.maximum(count, 1.0), at_issue))


def _simplex_least_squares(gram: np.ndarray, xty: np.ndarray) -> np.ndarray:
    """argmin over w >= 0, sum(w) = 1 of w' gram w - 2 w' xty (least squares of a convex blend), exactly: the
    optimum is the solution on the affine hull of its own support, so it is the best of those solutions, over
    every support, that has no negative weight (2^n - 1 supports; n is ``N_BLENDED``, small). A trace-relative
    ridge of 1e-9 keeps collinear forecasts (a profile of one day is yesterday) solvable."""
    n = len(xty)
    gram = gram + 1e-9 * np.trace(gram) / n * np.eye(n)
    best, best_value = np.full(n, 1.0 / n), np.inf
    for mask in range(1, 2 ** n):
        support = [i for i in range(n) if mask >> i & 1]
        k = len(support)
        kkt = np.ones((k + 1, k + 1))
        kkt[:k, :k], kkt[k, k] = gram[np.ix_(support, support)], 0.0
        w_s = np.linalg.solve(kkt, np.append(xty[support], 1.0))[:k]
        if (w_s < 0).any():
            continue
        w = np.zeros(n)
        w[support] = w_s
        value = w @ gram @ w - 2 * w @ xty
        if value < best_value:
            best, best_value = w, value
    return best


def _lookup(times_s: np.ndarray, values: np.ndarray, at_s: np.ndarray) -> np.ndarray:
    i = np.searchsorted(times_s, at_s, side="right") - 1
    return values[np.minimum(np.maximum(i, 0), len(values) - 1)]


def _grid_plan(issued_s: np.ndarray, target_s: np.ndarray):
    """Where each feature's look-up falls on the 15-minute grid: (first time, grid length, four index rows), or
    None when some time is off the grid."""
    ahead = target_s - issued_s
    days_back = np.maximum(np.ceil(ahead / DAY_S), 1.0)
    weeks_back = np.maximum(np.ceil(ahead / WEEK_S), 1.0)
    yesterday_s = target_s - days_back * DAY_S
    last_week_s = target_s - weeks_back * WEEK_S
    trend_s = issued_s - 3 * 3600.0
    lo = min(float(yesterday_s.min()), float(issued_s.min()) - DAY_S) - 6 * DAY_S
    lo = min(lo, float(last_week_s.min()), float(trend_s.min()))
    n = int((max(float(issued_s.max()), float(yesterday_s.max())) - lo) // LOOKUP_GRID_S) + 1
    steps = (np.concatenate((yesterday_s, last_week_s, issued_s, trend_s)) - lo) / LOOKUP_GRID_S
    index = steps.astype(np.int64)
    if lo % LOOKUP_GRID_S or not np.array_equal(index, steps):
        return None
    return lo, n, index.reshape(4, -1)


def _grid_features(grid: np.ndarray, known: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The six features from histories sampled on the grid (zones x grid points): zones x targets x 6.

    ``known``: which grid points lie in the actual history (not before its start). A feature that would read an
    unknown point falls back (``_features``' docstring). Compiled: the planner asks for a forecast every 30
    minutes and the daily fit for tens of thousands of rows, and as array expressions this was a few dozen small
    numpy calls each time."""
    return _grid_features_compiled(np.ascontiguousarray(grid, dtype=np.float64), np.ascontiguousarray(known),
                                   np.ascontiguousarray(index, dtype=np.int64), int(DAY_S // LOOKUP_GRID_S))


@njit(cache=True, nogil=True)
def _grid_features_compiled(grid, known, index, day):
    n_zones, n = grid.shape
    n_targets = index.shape[1]
    # week[z, i]: the sum of the known values at i + 6 day - m day for m = 0..6, in that order; week_days: how many
    week = np.zeros((n_zones, n - 6 * day))
    week_days = np.zeros((n_zones, n - 6 * day))
    for z in range(n_zones):
        for i in range(n - 6 * day):
            total, count = 0.0, 0.0
            for m in range(7):
                k = i + (6 - m) * day
                if known[z, k]:
                    total += grid[z, k]
                    count += 1.0
            week[z, i], week_days[z, i] = total, count
    out = np.empty((n_zones, n_targets, 6))
    for z in range(n_zones):
        for t in range(n_targets):
            yesterday_i, last_week_i, level_i, trend_i = index[0, t], index[1, t], index[2, t], index[3, t]
            level = grid[z, level_i]
            yesterday = grid[z, yesterday_i] if known[z, yesterday_i] else level
            profile_i, now_i = yesterday_i - 6 * day, level_i - 7 * day
            if week_days[z, profile_i] > 0:
                week_mean = week[z, profile_i] / max(week_days[z, profile_i], 1.0)
            else:
                week_mean = yesterday
            last_week = grid[z, last_week_i] if known[z, last_week_i] else week_mean
            if week_days[z, now_i] > 0:
                anomaly = level - week[z, now_i] / max(week_days[z, now_i], 1.0)
            else:
                anomaly = 0.0
            trend = level - grid[z, trend_i] if known[z, trend_i] else 0.0
            out[z, t, 0], out[z, t, 1], out[z, t, 2] = 1.0, yesterday, week_mean
            out[z, t, 3], out[z, t, 4], out[z, t, 5] = last_week, anomaly, trend
    return out


def _features(times_s: np.ndarray, values: np.ndarray, issued_s: np.ndarray, target_s: np.ndarray,
              start_s: float = -np.inf) -> np.ndarray:
    """One row per target: constant, yesterday, week_mean, last_week, anomaly, trend (see the module docstring).

    Nothing before ``start_s`` (where the actual history begins) is read: a profile is the mean of the days known
    (up to seven); a day or a week back that is not known falls back to the present level and to the profile
    respectively, the anomaly to 0 without a known day, the trend to 0 without the value three hours ago.

    Issue times and targets (and so every time looked up) lie on a 15-minute grid: the history is sampled on it
    once, with its running seven-day sums, and each feature is one index into those (other times fall back to
    a lookup per feature, with the same result).
    """
    plan = _grid_plan(issued_s, target_s)
    if plan is None:
        ahead = target_s - issued_s
        return _features_looked_up(times_s, values, issued_s, target_s, np.maximum(np.ceil(ahead / DAY_S), 1.0),
                                   np.maximum(np.ceil(ahead / WEEK_S), 1.0), start_s)
    lo, n, index = plan
    at = lo + LOOKUP_GRID_S * np.arange(n)
    return _grid_features(_lookup(times_s, values, at)[None, :], (at >= start_s)[None, :], index)[0]


def _features_zones(histories: list[tuple[np.ndarray, np.ndarray]], issued_s: float, target_s: np.ndarray,
                    starts_s: list[float] | None = None) -> np.ndarray:
    """``_features`` of several zones' histories (each known from its ``starts_s``, default: all known) for one
    issue time and the same targets: zones x targets x 6.

    On the 15-minute grid the zones share every index, so their sampled histories stack into one array and each
    feature is one indexing of it (the same arithmetic as ``_features``, so the same values)."""
    starts = [-np.inf] * len(histories) if starts_s is None else starts_s
    issued = np.full(len(target_s), issued_s)
    plan = _grid_plan(issued, target_s)
    if plan is None:
        return np.stack([_features(t, v, issued, target_s, s) for (t, v), s in zip(histories, starts)])
    lo, n, index = plan
    at = lo + LOOKUP_GRID_S * np.arange(n)
    known = np.stack([at >= s for s in starts])
    return _grid_features(np.stack([_lookup(t, v, at) for t, v in histories]), known, index)


def _features_looked_up(times_s, values, issued_s, target_s, days_back, weeks_back,
                        start_s: float = -np.inf) -> np.ndarray:
    def known_mean(at_s: list[np.ndarray], fallback: np.ndarray) -> np.ndarray:
        known = [a >= start_s for a in at_s]
        total = np.sum([np.where(k, _lookup(times_s, values, a), 0.0) for k, a in zip(known, at_s)], axis=0)
        count = np.sum([k.astype(np.float64) for k in known], axis=0)
        return np.where(count > 0, total / np.maximum(count, 1.0), fallback)

    level = _lookup(times_s, values, issued_s)
    yesterday_s = target_s - days_back * DAY_S
    yesterday = np.where(yesterday_s >= start_s, _lookup(times_s, values, yesterday_s), level)
    week_mean = known_mean([target_s - (days_back + m) * DAY_S for m in range(7)], yesterday)
    last_week_s = target_s - weeks_back * WEEK_S
    last_week = np.where(last_week_s >= start_s, _lookup(times_s, values, last_week_s), week_mean)
    profile_now = known_mean([issued_s - m * DAY_S for m in range(1, 8)], level)
    trend_s = issued_s - 3 * 3600.0
    trend = np.where(trend_s >= start_s, level - _lookup(times_s, values, trend_s), 0.0)
    return np.column_stack([np.ones_like(target_s), yesterday, week_mean, last_week, level - profile_now, trend])


def relative_week(times_s: np.ndarray, values: np.ndarray, monday_s: float, min_week_hours: int) -> np.ndarray:
    """The mean relative intensity by hour of the week from ``monday_s`` (a Monday 00:00 on the samples' clock):
    each hour's mean over its week's mean of hours, over the weeks with samples in at least ``min_week_hours`` of
    their 168 hours and a positive mean; NaN at an hour none of them has (all NaN without one). The values of a
    ``ShapePrior`` with ``step_s`` an hour."""
    hours = np.floor((np.asarray(times_s, dtype=np.float64) - monday_s) / 3600.0).astype(np.int64)
    relative = np.full(168, np.nan)
    if not len(hours):
        return relative
    cell = hours - (hours.min() // 168) * 168  # week-major: row = week, column = hour of the week
    n = int(cell.max() // 168 + 1) * 168
    count = np.bincount(cell, minlength=n).reshape(-1, 168)
    hourly = np.bincount(cell, np.asarray(values, dtype=np.float64), n).reshape(-1, 168) / np.maximum(count, 1)
    filled = count > 0
    mean = (hourly * filled).sum(axis=1) / np.maximum(filled.sum(axis=1), 1)
    kept = (filled.sum(axis=1) >= min_week_hours) & (mean > 0)
    ratio = np.where(filled[kept], hourly[kept] / mean[kept, None], 0.0)
    seen = filled[kept].sum(axis=0)
    np.divide(ratio.sum(axis=0), seen, out=relative, where=seen > 0)
    return relative
