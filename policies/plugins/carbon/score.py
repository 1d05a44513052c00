"""Carbon over the run (Score): how clean each zone is for a job that would start there now."""

from __future__ import annotations

from policies.framework import CycleState, normalize_lower_is_better
from policies.plugins.carbon.planner import plan_of
from policies.snapshot import JobRequest


class CarbonOverRun:
    """Score: lower emissions if the job started in the zone now (current intensity when there is no plan)."""

    name = "CarbonOverRun"

    def score(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> dict[str, float]:
        plan = plan_of(state, job)
        if plan is not None:
            costs = plan.now_cost_g
            raw = {z: costs[z][0] for z in zones if z in costs}
        else:
            known = state.snapshot.intensity_g_per_kwh
            raw = {z: known[z] for z in zones if z in known}
        scores = normalize_lower_is_better(raw)
        if len(scores) == len(zones):
            return scores  # every zone has a cost
        return {z: scores.get(z, 0.0) for z in zones}
