"""An interruptible job's cheapest pieces of time, given forecast curves: the plans the carbon plugins read.

The search itself is compiled (``policies.carbon_search``); this module lays out the shared window and keeps each
job's plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from policies.carbon_search import slot_plans_of
from policies.forecast import ZoneCurves


@dataclass(frozen=True)
class SlotPlan:
    """The cheapest pieces of ``[knots_s[0], knots_s[-1]]`` for an interruptible job.

    Piece i spans ``knots_s[i]..knots_s[i+1]``, is cheapest in zone index ``zone_index[i]`` at ``values[i]``
    g/kWh, and the plan runs the job there for ``allotted_s[i]`` seconds (from the piece's start). ``integral`` is
    the plan's intensity integral, ``first``: (start_s, until_s, zone index) of its first stretch in one zone (None
    if it plans nothing), ``marginal_g_per_kwh``: the dearest intensity it runs at (0 if it plans nothing).
    """

    knots_s: np.ndarray
    values: np.ndarray
    zone_index: np.ndarray
    allotted_s: np.ndarray
    integral: float
    first: tuple[float, float, int] | None
    marginal_g_per_kwh: float

    def first_run(self) -> tuple[float, float, int] | None:
        """(start_s, until_s, zone index) of the plan's first stretch in one zone, or None if it plans nothing."""
        return self.first

    def marginal(self) -> float:
        """The highest intensity the plan runs at (its last, dearest piece); 0 when it plans nothing."""
        return self.marginal_g_per_kwh


def slot_plans(zc: ZoneCurves, rows: tuple[int, ...], start_s: float, end_s: np.ndarray, need_s: np.ndarray,
               g_per: np.ndarray, present_margin: float = 0.0) -> list[tuple[int, float, SlotPlan]]:
    """The cheapest pieces of ``[start_s, end_s[j]]`` in the zones ``rows`` of ``zc``, for many jobs at once.

    need_s[j, i]: the seconds job j needs at its cap i (inf: no such cap); g_per[j, i]: its emissions per unit of
    intensity integral there. For each job: the cap that emits least (-1 when even full speed does not fit, in
    which case the plan runs flat out over the whole window), that emission, and the plan. present_margin
    (g/kWh): the piece we are in is ranked as if this much cleaner than it is, so later pieces are taken before it
    only when they are cleaner by more; emissions are counted at its real value.
    """
    lowest, where = zc.cheapest(rows)
    knots, values, zone_index, allotted, per_job = slot_plans_of(zc.knots_s, lowest, where, start_s, end_s, need_s,
                                                                 g_per, present_margin)
    out = []
    for j, (m, cap, cost, integral, start, until, zone, dearest) in enumerate(per_job.tolist()):
        m, zone = int(m), int(zone)
        plan_knots = knots[:m + 1].copy()
        plan_knots[m] = end_s[j]
        out.append((int(cap), cost, SlotPlan(plan_knots, values[:m], zone_index[:m], allotted[j, :m], integral,
                                             None if zone < 0 else (start, until, zone), dearest)))
    return out
