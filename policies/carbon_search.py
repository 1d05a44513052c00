"""The compiled searches behind carbon plans: where and when each job of a batch emits least.

A round of the simulator plans one or two jobs, so what costs is the fixed overhead of many small array
operations, not arithmetic: a compiled loop over a job's candidates does the work of some sixty vectorised calls
(the 100k-job year, perfect forecast, on a 2-core machine: run plans 23.2 -> 6.8 s, slot plans 8.2 -> 2.6 s).

Both searches are exact for piecewise-constant intensity. A contiguous run's emissions, as a function of its start,
are piecewise linear with kinks only where the run's start or end crosses a knot, so the optimum is at a window
edge, a knot inside the window, or a start that ends on a knot. An interruptible job's cheapest schedule (ignoring
other jobs) takes the cheapest pieces of time first, like a fractional knapsack with equal values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Starts whose emissions are within this relative hair of the best count as equally good: take the earliest.
TIE_REL = 1e-9
# Plans treat starts within this many seconds of now as "now" (events and float sums are not exact).
NOW_EPS_S = 1e-6
# Allotments shorter than this are rounding left-overs, not stretches worth starting a job for.
MIN_ALLOTTED_S = 1e-3


@njit(cache=True, nogil=True)
def _piece(k: np.ndarray, t: float) -> int:
    """The piece of ``k`` holding ``t``, clipped into the grid."""
    i = np.searchsorted(k, t, side="right") - 1
    return min(max(i, 0), len(k) - 2)


@njit(cache=True, nogil=True)
def integral_to(k: np.ndarray, cumulative: np.ndarray, values: np.ndarray, row: int, t: float) -> float:
    """The integral of row ``row`` of curves on knots ``k`` (``policies.forecast.ZoneCurves``) from ``k[0]`` to
    ``t`` (clipped into the grid)."""
    t = min(max(t, k[0]), k[-1])
    i = _piece(k, t)
    return cumulative[row, i] + (t - k[i]) * values[row, i]


@njit(cache=True, nogil=True)
def _integral_walk(k: np.ndarray, cumulative: np.ndarray, values: np.ndarray, row: int, t: float,
                   i: int) -> tuple[float, int]:
    """``integral_to`` of ``t`` and the piece it read, found by walking on from piece ``i`` (at or before that
    piece; -1: search for it): the same piece, hence the same value, for times asked in increasing order."""
    t = min(max(t, k[0]), k[-1])
    if i < 0:
        i = _piece(k, t)
    last = len(k) - 2
    while i < last and k[i + 1] <= t:
        i += 1
    return cumulative[row, i] + (t - k[i]) * values[row, i], i


@njit(cache=True, nogil=True)
def best_start(k: np.ndarray, cumulative: np.ndarray, values: np.ndarray, row: int, earliest_s: float,
               latest_s: float, run_s: float) -> tuple[float, float]:
    """The start in ``[earliest_s, latest_s]`` minimising row ``row``'s integral over ``run_s`` seconds, and that
    integral; the earliest of (nearly) equal starts."""
    latest_s = max(latest_s, earliest_s)
    a, b = np.searchsorted(k, earliest_s), np.searchsorted(k, latest_s)  # starts on a knot: k[a:b]
    c, d = np.searchsorted(k, earliest_s + run_s), np.searchsorted(k, latest_s + run_s)  # ends on one: k[c:d]
    starts = np.empty(b - a + d - c + 2)
    costs = np.empty_like(starts)
    starts[0], starts[1] = earliest_s, latest_s
    for e in range(2):
        costs[e] = integral_to(k, cumulative, values, row, starts[e] + run_s) - \
            integral_to(k, cumulative, values, row, starts[e])
    m = 2
    i = -1  # the other ends move forward with the knots: each is found from the last one's piece
    for p in range(a, b):  # at a knot the running integral is known: look up only the other end
        starts[m] = k[p]
        end, i = _integral_walk(k, cumulative, values, row, k[p] + run_s, i)
        costs[m] = end - cumulative[row, p]
        m += 1
    i = -1
    for q in range(c, d):
        starts[m] = k[q] - run_s
        begin, i = _integral_walk(k, cumulative, values, row, starts[m], i)
        costs[m] = cumulative[row, q] - begin
        m += 1
    best = costs.min()
    pick = -1
    for i in range(m):
        if costs[i] <= best + TIE_REL * abs(best) + 1e-9 and (pick < 0 or starts[i] < starts[pick]):
            pick = i
    return starts[pick], costs[pick]


@njit(cache=True, nogil=True)
def run_cost_table(k: np.ndarray, cumulative: np.ndarray, values: np.ndarray, integral_error: float,
                   allowed: np.ndarray, now_s: float, probe_s: float, deadline_s: np.ndarray, work_s: np.ndarray,
                   speed: np.ndarray, g_per: np.ndarray, n_caps: np.ndarray):
    """Every job's options in every zone (rows of the curves), on the cheapest cap for each.

    allowed[j, z]: whether job j may run in zone z. speed[j, c], g_per[j, c]: its speed and its emissions per unit
    of intensity integral (g per g/kWh x s) at cap c, for its first n_caps[j] caps; a slower cap is used only if it
    still meets the deadline. Returns jobs x zones tables (inf where not allowed or nothing fits):
    start-now emissions and the cap giving them; emissions of starting at ``probe_s`` instead (inf when a job cannot
    wait that long); the cheapest emissions within the deadline, its cap and its start; stacked in one array of
    6 x jobs x zones (the caps as floats), since a compiled function returns each array at a cost of its own that a
    round planning one job notices (``run_costs`` gives them apart).

    A (zone, cap) is searched only where its cleanest moment could match the cheapest known start of the job (now or
    at the latest, in any zone and cap): an exact bound, so nothing that could win is skipped. Known costs are
    differences of running integrals that may be large (a year of intensity) and round by more than their own size
    allows, hence the margin; the pair that gave the bound is always searched.
    """
    n_jobs, n_zones = allowed.shape
    table = np.full((6, n_jobs, n_zones), np.inf)
    table[1] = 0.0
    table[4] = 0.0
    now_g, now_cap, probe_g, best_g, best_cap, best_s = table[0], table[1], table[2], table[3], table[4], table[5]
    first = _piece(k, now_s)
    for j in range(n_jobs):
        caps = n_caps[j]
        known = np.full((n_zones, caps), np.inf)
        usable = np.zeros(caps, dtype=np.bool_)
        upper = np.inf
        for c in range(caps):
            run = work_s[j] / speed[j, c]
            latest = deadline_s[j] - run
            usable[c] = latest >= now_s - NOW_EPS_S or speed[j, c] >= 1.0  # a slower cap must meet the deadline
            if not usable[c]:
                continue
            late = max(latest, now_s)
            for z in range(n_zones):
                if not allowed[j, z]:
                    continue
                now = g_per[j, c] * (integral_to(k, cumulative, values, z, now_s + run)
                                     - integral_to(k, cumulative, values, z, now_s))
                at_latest = g_per[j, c] * (integral_to(k, cumulative, values, z, late + run)
                                           - integral_to(k, cumulative, values, z, late))
                if now < now_g[j, z]:
                    now_g[j, z], now_cap[j, z] = now, c
                if latest >= probe_s:
                    probe = g_per[j, c] * (integral_to(k, cumulative, values, z, probe_s + run)
                                           - integral_to(k, cumulative, values, z, probe_s))
                    probe_g[j, z] = min(probe_g[j, z], probe)
                known[z, c] = min(now, at_latest)
                upper = min(upper, known[z, c])
        end = np.searchsorted(k, max(deadline_s[j], now_s + work_s[j]))
        end = min(max(end, first + 1), len(k) - 1)
        for z in range(n_zones):
            if not allowed[j, z]:
                continue
            floor = values[z, first:end].min()
            for c in range(caps):
                if not usable[c]:
                    continue
                run = work_s[j] / speed[j, c]
                margin = upper * 1e-9 + g_per[j, c] * integral_error + 1e-9
                if known[z, c] > upper and floor * (g_per[j, c] * run) > upper + margin:
                    continue
                start, integral = best_start(k, cumulative, values, z, now_s, deadline_s[j] - run, run)
                cost = g_per[j, c] * integral
                if cost < best_g[j, z]:
                    best_g[j, z], best_cap[j, z], best_s[j, z] = cost, c, start
    return table


@njit(cache=True, nogil=True)
def run_costs(k: np.ndarray, cumulative: np.ndarray, values: np.ndarray, integral_error: float, allowed: np.ndarray,
              now_s: float, probe_s: float, deadline_s: np.ndarray, work_s: np.ndarray, speed: np.ndarray,
              g_per: np.ndarray, n_caps: np.ndarray):
    """``run_cost_table``'s six tables apart: start-now emissions, its cap, emissions of starting at ``probe_s``,
    the cheapest emissions, their cap and their start (jobs x zones; caps as integers)."""
    t = run_cost_table(k, cumulative, values, integral_error, allowed, now_s, probe_s, deadline_s, work_s, speed,
                       g_per, n_caps)
    return t[0].copy(), t[1].astype(np.int64), t[2].copy(), t[3].copy(), t[4].astype(np.int64), t[5].copy()


@njit(cache=True, nogil=True)
def slot_plans_of(k: np.ndarray, lowest: np.ndarray, where: np.ndarray, start_s: float, end_s: np.ndarray,
                  need_s: np.ndarray, g_per: np.ndarray, present_margin: float):
    """Each job's cheapest pieces of its window ``[start_s, end_s[j]]``, on the knots ``k`` of curves whose
    cheapest zone has intensity ``lowest[i]`` (zone ``where[i]``) over piece i.

    need_s[j, c]: the seconds job j needs at cap c (inf: no such cap); g_per[j, c]: its emissions per unit of
    intensity integral there. present_margin (g/kWh): the piece we are in is ranked as if this much cleaner than it
    is, so later pieces are taken before it only when they are cleaner by more (emissions count its real value).

    The windows share their pieces: ``knots_s`` (the first at ``start_s``), ``values`` and ``zone_index``; job j's
    are the first ``n_pieces[j]`` of them, its last ending at ``end_s[j]``. Per job: the seconds allotted to each
    piece (``allotted[j]``) and a row of ``per_job``: the number of its pieces, the cap that emits least (-1 when
    even full speed does not fit: then it runs flat out over its whole window), that emission, the allotted pieces'
    intensity integral, the first stretch in one zone (start, end, zone; zone -1 when nothing is allotted) and the
    dearest intensity allotted (0 when nothing is). Counts and indices are floats there: a compiled function
    returns each array at a cost of its own, which a round planning one job notices.
    """
    a = np.searchsorted(k, start_s, side="right")
    b = np.searchsorted(k, end_s)
    n = max(b.max() - a + 1, 1)
    knots_s = np.empty(n + 1)
    values = np.empty(n)
    zone_index = np.empty(n, dtype=np.int64)
    knots_s[0] = start_s
    for i in range(n):
        piece = min(max(a - 1 + i, 0), len(lowest) - 1)
        values[i], zone_index[i] = lowest[piece], where[piece]
        knots_s[i + 1] = k[a + i] if a + i < len(k) else np.inf
    rank = values.copy()
    rank[0] -= present_margin
    order = np.argsort(rank, kind="mergesort")  # stable: among equals, earlier pieces first
    cap, cost, allotted = _fill(knots_s, values, order, end_s, need_s, g_per)
    n_jobs = len(end_s)
    n_pieces = b - a + 1
    per_job = np.zeros((n_jobs, 8))  # pieces, cap, cost, integral, first (start, end, zone), marginal
    for j in range(n_jobs):
        m = n_pieces[j]
        integral, marginal = 0.0, 0.0
        for i in range(m):
            integral += allotted[j, i] * values[i]
            if allotted[j, i] > 0.0:
                marginal = max(marginal, values[i])
        end = knots_s[m]
        knots_s[m] = end_s[j]  # the job's own last piece ends at its end
        first_s, until_s, zone = first_run(knots_s[:m + 1], zone_index[:m], allotted[j, :m])
        knots_s[m] = end
        per_job[j, 0], per_job[j, 1], per_job[j, 2], per_job[j, 3] = m, cap[j], cost[j], integral
        per_job[j, 4], per_job[j, 5], per_job[j, 6], per_job[j, 7] = first_s, until_s, zone, marginal
    return knots_s, values, zone_index, allotted, per_job


@njit(cache=True, nogil=True)
def _fill(knots_s: np.ndarray, values: np.ndarray, order: np.ndarray, end_s: np.ndarray, need_s: np.ndarray,
          g_per: np.ndarray):
    """Each job's cheapest pieces of a shared window that starts at ``knots_s[0]`` and ends at ``end_s[j]``
    (``order`` ranks the pieces cheapest first): the cap that emits least (-1: none fits), that emission, and the
    seconds allotted to each piece."""
    n_jobs, n_caps = need_s.shape
    n = len(values)
    cap = np.full(n_jobs, -1, dtype=np.int64)
    cost = np.full(n_jobs, np.inf)
    allotted = np.zeros((n_jobs, n))
    width = np.empty(n)
    for j in range(n_jobs):
        for s in range(n):
            i = order[s]
            width[s] = max(min(knots_s[i + 1], end_s[j]) - knots_s[i], 0.0)
        span = end_s[j] - knots_s[0]
        for c in range(n_caps):
            need = need_s[j, c]
            if need > span + 1e-6:
                continue
            # the cheapest ``need`` seconds: whole pieces until the one that crosses it, then part of that
            filled, spent, s = 0.0, 0.0, 0
            while s < n - 1 and filled + width[s] < need - 1e-9:
                filled += width[s]
                spent += width[s] * values[order[s]]
                s += 1
            total = g_per[j, c] * (spent + (need - filled) * values[order[s]])
            if total < cost[j]:
                cost[j], cap[j] = total, c
        need = need_s[j, cap[j]] if cap[j] >= 0 else span
        filled = 0.0
        for s in range(n):
            taken = min(width[s], max(need - filled, 0.0))
            filled += width[s]
            allotted[j, order[s]] = taken if taken >= MIN_ALLOTTED_S else 0.0
    return cap, cost, allotted


@njit(cache=True, nogil=True)
def first_run(knots_s: np.ndarray, zone_index: np.ndarray, allotted_s: np.ndarray) -> tuple[float, float, int]:
    """(start, end, zone) of the first stretch of allotted pieces in one zone; zone -1 when nothing is allotted."""
    n = len(allotted_s)
    i = 0
    while i < n and allotted_s[i] <= 0.0:
        i += 1
    if i == n:
        return 0.0, 0.0, -1
    start_s, until_s, zone = knots_s[i], knots_s[i], zone_index[i]
    while i < n and allotted_s[i] > 0.0 and zone_index[i] == zone:
        until_s += allotted_s[i]
        if allotted_s[i] < knots_s[i + 1] - knots_s[i]:
            break  # a partial piece ends the stretch
        i += 1
    return start_s, until_s, zone
