"""Where and when one job emits least, given forecast curves: the arithmetic behind the carbon plugins.

Both searches are exact for piecewise-constant intensity. A contiguous run's emissions, as a function of its
start, are piecewise linear with kinks only where the run's start or end crosses a knot of the curve, so the
optimum is at a window edge or at such a crossing. An interruptible job's cheapest schedule (ignoring other
jobs) takes the cheapest pieces of time first, like a fractional knapsack with equal values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from policies.forecast import ZoneCurves

# Allotments shorter than this are rounding left-overs, not stretches worth starting a job for.
MIN_ALLOTTED_S = 1e-3
# Starts whose emissions are within this relative hair of the best count as equally good: take the earliest.
TIE_REL = 1e-9


def edge_costs(zc: ZoneCurves, earliest_s: float, latest_s: np.ndarray, run_s: np.ndarray,
               probe_s: float) -> np.ndarray:
    """zones x runs x 3: each run's intensity integral in each of ``zc``'s zones when it starts at ``earliest_s``,
    at ``max(latest_s, earliest_s)`` and at ``probe_s``."""
    edges = np.empty((len(run_s), 3))
    edges[:, 0], edges[:, 1], edges[:, 2] = earliest_s, np.maximum(latest_s, earliest_s), probe_s
    at = zc.integral_to(None, np.stack((edges, edges + run_s[:, None])))
    return at[:, 1] - at[:, 0]


def best_starts_pairs(zc: ZoneCurves, zone: np.ndarray, earliest_s: float, latest_s: np.ndarray,
                      run_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``best_starts`` for many (zone row of ``zc``, latest start, run) triples at once, on the shared knot grid.

    For each: the start in ``[earliest_s, latest_s[i]]`` minimising the intensity integral over ``run_s[i]`` seconds
    in zone ``zone[i]``, and that integral (earliest of equals). The candidates are the window's edges, the knots
    inside it, and the starts that end on a knot: the cost is piecewise linear between them, so the minimum among
    them is exact. At a knot the running integral is known, so each candidate needs only its other end looked up.
    """
    latest_s = np.maximum(latest_s, earliest_s)
    k, n_pieces = zc.knots_s, len(zc.knots_s) - 1
    cumulative, values = zc.cumulative.ravel(), zc.values.ravel()  # flat: row r's knot i at r * (n_pieces + 1) + i
    n = len(run_s)
    a, b = k.searchsorted((earliest_s, latest_s.max()))  # knots in the widest window: k[a:b]
    c, d = k.searchsorted(np.stack((earliest_s + run_s, latest_s + run_s)))  # run i ends on k[c[i]:d[i]]
    n_end = int((d - c).max(initial=0))
    end_index = c[:, None] + np.arange(n_end)
    end_valid = end_index < d[:, None]
    np.minimum(end_index, len(k) - 1, out=end_index)
    run = run_s[:, None]
    starts = np.concatenate((np.broadcast_to(k[a:b], (n, b - a)), k[end_index] - run,
                             np.stack((np.full(n, earliest_s), latest_s), axis=1)), axis=1)
    # the ends of the candidates not on a knot: at a start knot its end, at an end knot its start, at an edge both
    lookup = np.concatenate((starts[:, :b - a] + run, starts[:, b - a:]), axis=1)
    lookup = np.concatenate((lookup, starts[:, -2:] + run), axis=1)
    t = np.minimum(np.maximum(lookup, k[0]), k[-1])
    piece = np.minimum(np.maximum(k.searchsorted(t, "right") - 1, 0), n_pieces - 1)
    row = (zone * (n_pieces + 1))[:, None]
    flat = row + piece
    looked = cumulative[flat] + (t - k[piece]) * values[(zone * n_pieces)[:, None] + piece]
    at_knot = np.concatenate((cumulative[row + np.arange(a, b)], cumulative[row + end_index]), axis=1)
    nb = b - a
    costs = np.empty_like(starts)
    np.subtract(looked[:, :nb], at_knot[:, :nb], out=costs[:, :nb])
    np.subtract(at_knot[:, nb:], looked[:, nb:nb + n_end], out=costs[:, nb:nb + n_end])
    np.subtract(looked[:, -2:], looked[:, nb + n_end:nb + n_end + 2], out=costs[:, -2:])
    costs[:, :nb][k[a:b][None, :] > latest_s[:, None]] = np.inf
    costs[:, nb:nb + n_end][~end_valid] = np.inf
    best = costs.min(axis=1, keepdims=True)
    near = np.where(costs <= best + TIE_REL * np.abs(best) + 1e-9, starts, np.inf)
    pick = np.argmin(near, axis=1)
    rows = np.arange(n)
    return near[rows, pick], costs[rows, pick]


@dataclass(frozen=True)
class SlotPlan:
    """The cheapest pieces of ``[knots_s[0], knots_s[-1]]`` for an interruptible job.

    Piece i spans ``knots_s[i]..knots_s[i+1]``, is cheapest in zone index ``zone_index[i]`` at ``values[i]``
    g/kWh, and the plan runs the job there for ``allotted_s[i]`` seconds (from the piece's start).
    """

    knots_s: np.ndarray
    values: np.ndarray
    zone_index: np.ndarray
    allotted_s: np.ndarray
    integral: float

    def first_run(self) -> tuple[float, float, int] | None:
        """(start_s, until_s, zone index) of the plan's first stretch in one zone, or None if it plans nothing."""
        return self._first_run

    def marginal(self) -> float:
        """The highest intensity the plan runs at (its last, dearest piece); 0 when it plans nothing."""
        return self._marginal

    @cached_property
    def _first_run(self) -> tuple[float, float, int] | None:
        used = self.allotted_s > 0
        i = int(np.argmax(used))
        if not used[i]:
            return None
        knots, allotted, zones = self.knots_s.tolist(), self.allotted_s.tolist(), self.zone_index.tolist()
        start_s, until_s, zone = knots[i], knots[i], zones[i]
        while i < len(allotted) and allotted[i] > 0 and zones[i] == zone:
            until_s += allotted[i]
            if allotted[i] < knots[i + 1] - knots[i]:
                break  # a partial piece ends the stretch
            i += 1
        return start_s, until_s, zone

    @cached_property
    def _marginal(self) -> float:
        used = self.allotted_s > 0
        return float(self.values[used].max()) if used.any() else 0.0


def slot_plans(zc: ZoneCurves, rows: tuple[int, ...], start_s: float, end_s: np.ndarray, need_s: np.ndarray,
               g_per: np.ndarray, present_margin: float = 0.0) -> list[tuple[int, float, SlotPlan]]:
    """The ``SlotGrid`` of ``rows`` of ``zc`` over ``[start_s, end_s[j]]`` and its plan, for many jobs at once.

    need_s[j, i]: the seconds job j needs at its cap i (inf: no such cap); g_per[j, i]: its emissions per unit of
    intensity integral there. For each job: the cap that emits least (-1 when even full speed does not fit, in
    which case the plan runs flat out over the whole window), that emission, and the plan. present_margin
    (g/kWh): the piece we are in is ranked as if this much cleaner than it is, so later pieces are taken before it
    only when they are cleaner by more; emissions are counted at its real value.
    """
    k = zc.knots_s
    lowest, where = zc.cheapest(rows)
    a = int(np.searchsorted(k, start_s, "right"))
    b = np.searchsorted(k, end_s)
    n_pieces = b - a + 1  # per job
    pieces = np.minimum(np.maximum(np.arange(a - 1, int(b.max())), 0), len(lowest) - 1)
    values, zone_index = lowest[pieces], where[pieces]  # shared: every window starts at start_s
    inner = np.arange(a, int(b.max()) + 1)
    knots = np.concatenate(([start_s], np.where(inner < len(k), k[np.minimum(inner, len(k) - 1)], np.inf)))
    # each job's piece ends: its own end caps the last piece, later pieces have no width
    piece_end = np.minimum(knots[1:][None, :], end_s[:, None])
    widths = np.maximum(piece_end - knots[:-1][None, :], 0.0)
    rank = values
    if present_margin and len(values):
        rank = values.copy()
        rank[0] -= present_margin
    order = np.argsort(rank, kind="stable")  # ties: earlier pieces first; a job's own pieces keep this order
    sorted_w, sorted_v = widths[:, order], values[order]
    filled = np.cumsum(sorted_w, axis=1)
    spent = np.cumsum(sorted_w * sorted_v, axis=1)
    span = end_s - start_s
    # the integral of the cheapest need_s[j, i] seconds: full pieces before the one that crosses it, part of that
    last = filled.shape[1] - 1
    n = np.minimum((filled[:, None, :] < need_s[:, :, None] - 1e-9).sum(axis=2), last)
    rows_j = np.arange(len(end_s))[:, None]
    before_s = np.where(n > 0, filled[rows_j, n - 1], 0.0)
    before = np.where(n > 0, spent[rows_j, n - 1], 0.0)
    totals = np.where(need_s > span[:, None] + 1e-6, np.inf, before + (need_s - before_s) * sorted_v[n])
    costs = g_per * totals
    best = np.argmin(costs, axis=1)
    best_cost = costs[np.arange(len(end_s)), best]
    fits = np.isfinite(best_cost)
    need = np.where(fits, need_s[np.arange(len(end_s)), best], span)[:, None]
    taken = np.minimum(sorted_w, np.maximum(need - (filled - sorted_w), 0.0))
    taken[taken < MIN_ALLOTTED_S] = 0.0
    allotted = np.empty_like(taken)
    allotted[:, order] = taken
    integrals = allotted @ values
    out = []
    for j, (m, ok, cap) in enumerate(zip(n_pieces.tolist(), fits.tolist(), best.tolist())):
        plan_knots = knots[:m + 1].copy()
        plan_knots[m] = end_s[j]
        out.append((cap if ok else -1, float(best_cost[j]),
                    SlotPlan(plan_knots, values[:m], zone_index[:m], allotted[j, :m], float(integrals[j]))))
    return out
