"""Plugins about room: GPUs on one node, the cluster's power budget, arrival order, the listed zone order."""

from __future__ import annotations

from typing import Sequence

from policies.framework import MAX_SCORE, CycleState, job_draw_w, steps_of
from policies.snapshot import FULL_POWER, CapStep, JobRequest
from policies.status import SUCCESS, Code, Status


class NodeCapacity:
    """Filter: zones with a node that has the job's GPUs free now."""

    name = "NodeCapacity"

    def filter(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> tuple[tuple[str, ...], Status]:
        fitting = tuple(z for z in zones if state.cluster.fits(z, job.gpus))
        if fitting:
            return fitting, SUCCESS
        if not zones:
            return (), Status(Code.UNSCHEDULABLE, self.name, "waiting: the cluster has no GPUs yet")
        where = f"zone {zones[0]}" if len(zones) == 1 else f"zones {', '.join(zones)}"
        if max((state.cluster.largest_node.get(z, 0) for z in zones), default=0) < job.gpus:
            return (), Status(Code.UNRESOLVABLE, self.name, f"waiting: no node in {where} has {job.gpus} GPUs")
        gpus = "a free GPU" if job.gpus == 1 else f"{job.gpus} free GPUs on one node"
        big_enough = tuple(z for z in zones if state.cluster.largest_node.get(z, 0) >= job.gpus)
        return (), Status(Code.UNSCHEDULABLE, self.name, f"waiting for {gpus} in {where}", room_in=big_enough)


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

    def score(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> dict[str, float]:
        listed = job.zones or state.snapshot.zones()
        rank = {z: listed.index(z) if z in listed else len(listed) for z in zones}
        worst = max(rank.values()) or 1
        return {z: MAX_SCORE * (1 - r / worst) for z, r in rank.items()}


class FullPower:
    """CapChooser: no cap, run to completion."""

    name = "FullPower"

    def __init__(self, label: str = "fifo"):
        self.label = label

    def choose(self, state: CycleState, job: JobRequest, zone: str) -> tuple[CapStep, float | None, str]:
        return FULL_POWER, None, f"started in zone {zone} ({self.label})"
