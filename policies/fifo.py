"""The carbon-agnostic baseline: start each job as soon as it fits, in arrival order, at full power."""

from __future__ import annotations

from collections import defaultdict

from policies.decisions import Decision, Start, Wait
from policies.snapshot import JobRequest, Snapshot


class FifoPolicy:
    """Start waiting jobs in arrival order: home zone when it has room, else the first allowed zone with room.

    A job that does not fit now waits; later jobs that fit may still start (the queue is not blocked by a
    large job at its head).
    """

    name = "fifo"

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        # free[zone][node] -> free GPU ids, in the order the snapshot lists them
        free: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for gpu in snapshot.gpus:
            if not gpu.busy:
                free[gpu.zone][gpu.node_id].append(gpu.gpu_id)
        all_zones = snapshot.zones()
        decisions: list[Decision] = []
        for job in sorted(snapshot.waiting, key=lambda j: (j.submitted_s, j.job_id)):
            zones = job.zones or all_zones
            placed = _place(job, zones, free)
            if placed is None:
                decisions.append(Wait(job.job_id, _waiting_reason(job, zones, snapshot)))
                continue
            zone, node_id, gpu_ids = placed
            decisions.append(Start(job.job_id, node_id, zone, gpu_ids, reason=f"started in zone {zone} (fifo)"))
        return decisions


def _place(job: JobRequest, zones, free) -> tuple[str, str, tuple[str, ...]] | None:
    for zone in zones:
        for node_id, gpu_ids in free.get(zone, {}).items():
            if len(gpu_ids) >= job.gpus:
                taken = tuple(gpu_ids[: job.gpus])
                del gpu_ids[: job.gpus]
                return zone, node_id, taken
    return None


def _waiting_reason(job: JobRequest, zones, snapshot: Snapshot) -> str:
    if not zones:
        return "waiting: the cluster has no GPUs yet"
    gpus = "a free GPU" if job.gpus == 1 else f"{job.gpus} free GPUs on one node"
    where = f"zone {zones[0]}" if len(zones) == 1 else f"zones {', '.join(zones)}"
    per_node: dict[str, int] = defaultdict(int)
    for gpu in snapshot.gpus:
        if gpu.zone in zones:
            per_node[gpu.node_id] += 1
    if max(per_node.values(), default=0) < job.gpus:
        return f"waiting: no node in {where} has {job.gpus} GPUs"
    return f"waiting for {gpus} in {where}"
