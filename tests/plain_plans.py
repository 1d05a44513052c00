"""The plain searches that ``policies.carbon_plan``'s vectorised ones replace, one curve or window at a time: test
oracles for them (the fast paths must agree), not used by the policies."""

from __future__ import annotations

import numpy as np

from policies.carbon_plan import SlotPlan
from policies.carbon_search import MIN_ALLOTTED_S, TIE_REL
from policies.forecast import IntensityCurve


def best_starts(curve: IntensityCurve, earliest_s: float, latest_s: np.ndarray,
                run_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each pair (``latest_s[i]``, ``run_s[i]``): the start in ``[earliest_s, latest_s[i]]`` minimising the
    intensity integral over ``run_s[i]`` seconds, and that integral (earliest of equals). One pass for all caps."""
    latest_s = np.maximum(latest_s, earliest_s)
    k = curve.knots_s
    a, b = np.searchsorted(k, (earliest_s, latest_s.max()))
    c, d = np.searchsorted(k, (earliest_s + run_s.min(), latest_s.max() + run_s.max()))
    shared = np.concatenate(([earliest_s], k[a:b], (k[c:d][None, :] - run_s[:, None]).ravel()))
    # every row gets every candidate, clipped into its own window (a clipped one is just a window edge)
    starts = np.concatenate((np.broadcast_to(shared, (len(run_s), len(shared))), latest_s[:, None]), axis=1)
    starts = np.minimum(np.maximum(starts, earliest_s), latest_s[:, None])
    costs = curve.integral(starts, starts + run_s[:, None])
    best = costs.min(axis=1, keepdims=True)
    near = np.where(costs <= best + TIE_REL * np.abs(best) + 1e-9, starts, np.inf)
    pick = np.argmin(near, axis=1)
    rows = np.arange(len(run_s))
    return starts[rows, pick], costs[rows, pick]


class SlotGrid:
    """The cheapest zone's intensity over every piece of a window, shared by the searches for each cap."""

    def __init__(self, curves: list[IntensityCurve], start_s: float, end_s: float):
        inner = [c.knots_s[np.searchsorted(c.knots_s, start_s, "right"):np.searchsorted(c.knots_s, end_s)]
                 for c in curves]
        self.knots_s = np.unique(np.concatenate([[start_s, end_s], *inner]))
        mids = (self.knots_s[:-1] + self.knots_s[1:]) / 2
        per_zone = np.vstack([c.value_at(mids) for c in curves])
        self.zone_index = np.argmin(per_zone, axis=0)
        self.values = per_zone[self.zone_index, np.arange(len(mids))]
        self._finish()

    def _finish(self) -> None:
        self.widths = np.diff(self.knots_s)
        self._order = np.argsort(self.values, kind="stable")  # ties: earlier pieces first
        self._filled_s = np.cumsum(self.widths[self._order])
        self._spent = np.cumsum((self.widths * self.values)[self._order])  # integral of the cheapest pieces

    @property
    def span_s(self) -> float:
        return float(self.knots_s[-1] - self.knots_s[0])

    def integrals(self, needed_s: np.ndarray) -> np.ndarray:
        """The integral of the cheapest ``needed_s[i]`` seconds, for each i (inf where the window is too short)."""
        n = np.minimum(np.searchsorted(self._filled_s, needed_s - 1e-9), len(self._order) - 1)
        before_s = np.where(n > 0, self._filled_s[n - 1], 0.0)
        before = np.where(n > 0, self._spent[n - 1], 0.0)
        total = before + (needed_s - before_s) * self.values[self._order[n]]
        return np.where(needed_s > self.span_s + 1e-6, np.inf, total)

    def plan(self, needed_s: float) -> SlotPlan | None:
        """The cheapest pieces adding up to ``needed_s`` seconds, or None when the window is too short."""
        if needed_s > self.span_s + 1e-6:
            return None
        n = int(np.searchsorted(self._filled_s, needed_s - 1e-9))
        allotted = np.zeros_like(self.widths)
        allotted[self._order[:n]] = self.widths[self._order[:n]]
        if n < len(self._order):
            allotted[self._order[n]] = needed_s - (self._filled_s[n - 1] if n else 0.0)
        allotted[allotted < MIN_ALLOTTED_S] = 0.0
        used = allotted > 0
        return SlotPlan(self.knots_s, self.values, self.zone_index, allotted, float(allotted @ self.values),
                        first_run(self.knots_s, self.zone_index, allotted),
                        float(self.values[used].max()) if used.any() else 0.0)


def first_run(knots_s: np.ndarray, zone_index: np.ndarray, allotted_s: np.ndarray) -> tuple[float, float, int] | None:
    """(start_s, until_s, zone index) of the first stretch of allotted pieces in one zone, or None."""
    used = allotted_s > 0
    i = int(np.argmax(used))
    if not used[i]:
        return None
    knots, allotted, zones = knots_s.tolist(), allotted_s.tolist(), zone_index.tolist()
    start_s, until_s, zone = knots[i], knots[i], zones[i]
    while i < len(allotted) and allotted[i] > 0 and zones[i] == zone:
        until_s += allotted[i]
        if allotted[i] < knots[i + 1] - knots[i]:
            break  # a partial piece ends the stretch
        i += 1
    return start_s, until_s, zone
