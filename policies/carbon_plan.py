"""An interruptible job's cheapest pieces of time, given forecast curves: the plans the carbon plugins read.

The search itself is compiled (``policies.carbon_search``); this module lays out the shared window and keeps each
job's plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from policies.carbon_search import first_run, slot_fill
from policies.forecast import ZoneCurves


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
        start_s, until_s, zone = first_run(self.knots_s, self.zone_index, self.allotted_s)
        return None if zone < 0 else (float(start_s), float(until_s), int(zone))

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
    rank = values
    if present_margin and len(values):
        rank = values.copy()
        rank[0] -= present_margin
    order = np.argsort(rank, kind="stable")  # ties: earlier pieces first
    caps, costs, allotted = slot_fill(knots, values, order, end_s, need_s, g_per)
    integrals = allotted @ values
    out = []
    for j, (m, cap, cost) in enumerate(zip(n_pieces.tolist(), caps.tolist(), costs.tolist())):
        plan_knots = knots[:m + 1].copy()
        plan_knots[m] = end_s[j]
        out.append((cap, cost, SlotPlan(plan_knots, values[:m], zone_index[:m], allotted[j, :m], float(integrals[j]))))
    return out
