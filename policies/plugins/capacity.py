"""Plugins about room: GPUs on the nodes of a zone, the cluster's power budget, arrival order, the listed zone order."""

from __future__ import annotations

from typing import Sequence

from policies import gang
from policies.framework import MAX_SCORE, CycleState, job_draw_w, steps_of
from policies.snapshot import FULL_POWER, CapStep, JobRequest
from policies.status import SUCCESS, Code, Status


class NodeCapacity:
    """Filter: zones with room for the job's gang now: K free GPUs on each of N / K nodes (``policies.gang``).

    UNRESOLVABLE when none of its zones has enough nodes of K GPUs, busy or not, for any shape it may take;
    UNSCHEDULABLE (waiting for room in the zones that could take it) when they are not free now.
    """

    name = "NodeCapacity"

    def filter(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> tuple[tuple[str, ...], Status]:
        cluster, per_node = state.cluster, job.gpus_per_node
        fitting = tuple(z for z in zones if cluster.fits(z, job.gpus, per_node))
        if fitting:
            return fitting, SUCCESS
        if not zones:
            return (), Status(Code.UNSCHEDULABLE, self.name, "waiting: the cluster has no GPUs yet")
        where = f"zone {zones[0]}" if len(zones) == 1 else f"zones {', '.join(zones)}"
        big_enough = tuple(z for z in zones if cluster.possible(z, job.gpus, per_node))
        if not big_enough:
            return (), Status(Code.UNRESOLVABLE, self.name, f"waiting: {self._never(cluster, job, zones, where)}")
        if all(z in cluster.pooled for z in big_enough):
            shapes = [job.gpus]  # a pool without nodes takes any job its count has room for
        else:
            shapes = [k for k in gang.shapes(job.gpus, per_node)
                      if any(gang.fit(cluster.node_sizes[z].values(), job.gpus, k) for z in big_enough)]
        wanted = ", or ".join(gang.describe(job.gpus, k) for k in shapes)
        return (), Status(Code.UNSCHEDULABLE, self.name, f"waiting for {wanted} in {where}", room_in=big_enough)

    @staticmethod
    def _never(cluster, job: JobRequest, zones: tuple[str, ...], where: str) -> str:
        """Why no zone of ``zones`` can ever take the job."""
        per_node = job.gpus_per_node
        if per_node is not None and not gang.shapes(job.gpus, per_node):
            return f"gpus_per_node {per_node} does not divide the job's {job.gpus} GPUs"
        if per_node is not None and per_node < job.gpus and not all(z in cluster.pooled for z in zones):
            return f"{where} {'has' if len(zones) == 1 else 'have'} no {job.gpus // per_node} nodes of {per_node} GPUs"
        several = per_node is None and any(len(cluster.node_sizes.get(z, ())) > 1 for z in zones)
        spread = ", nor enough nodes to spread them evenly" if several else ""
        return f"no node in {where} has {job.gpus} GPUs{spread}"


class PowerBudget:
    """Filter: the job's draw, at its lowest cap, fits in what the cluster's power budget has left."""

    name = "PowerBudget"

    def filter(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> tuple[tuple[str, ...], Status]:
        if state.budget_left_w is None:
            return zones, SUCCESS
        need_w = min(job_draw_w(job, s) for s in steps_of(job))
        if need_w <= state.budget_left_w + 1e-9:
            return zones, SUCCESS
        budget_w = state.snapshot.power_budget_w
        if need_w > budget_w:
            return (), Status(Code.UNRESOLVABLE, self.name,
                              f"waiting: the job draws {need_w:.0f} W, more than the whole {budget_w:.0f} W budget")
        return (), Status(Code.UNSCHEDULABLE, self.name, f"waiting for power: the budget has "
                          f"{max(state.budget_left_w, 0):.0f} W left, the job draws {need_w:.0f} W")


class ArrivalOrder:
    """QueueSort: higher priority first (users' ``--priority``; traces have none), then first submitted."""

    name = "ArrivalOrder"

    def sort(self, state: CycleState, jobs: Sequence[JobRequest]) -> list[JobRequest]:
        return sorted(jobs, key=lambda j: (-j.priority, j.submitted_s, j.job_id))


class ZoneOrder:
    """Score: the job's home zone best, then its other zones in the order it lists them."""

    name = "ZoneOrder"

    def __init__(self) -> None:
        # a memo of the scores by (listed zones, zones scored): a pure function of them, asked for every decision
        self._scores: dict[tuple[tuple[str, ...], tuple[str, ...]], dict[str, float]] = {}

    def score(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> dict[str, float]:
        listed = job.zones or state.zones
        key = (listed, zones)
        found = self._scores.get(key)
        if found is None:
            rank = {z: listed.index(z) if z in listed else len(listed) for z in zones}
            worst = max(rank.values()) or 1
            found = {z: MAX_SCORE * (1 - r / worst) for z, r in rank.items()}
            if len(self._scores) > 4096:
                self._scores.clear()
            self._scores[key] = found
        return dict(found)  # the caller's to keep


class FullPower:
    """CapChooser: no cap, run to completion."""

    name = "FullPower"

    def __init__(self, label: str = "fifo"):
        self.label = label

    def choose(self, state: CycleState, job: JobRequest, zone: str) -> tuple[CapStep, float | None, str]:
        return FULL_POWER, None, f"started in zone {zone} ({self.label})"
