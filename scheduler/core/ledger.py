"""What one round's decisions may do, checked against the snapshot they answer.

The ledger keeps the round's room (free GPUs per zone pool, per node of a pool with nodes, or GPU by GPU) and
power as decisions use and free them, so that a start without room, over the power budget, outside the job's
zones, at a cap its profile does not list, of a job that was not offered, or not laid out as a gang (the same
number of GPUs on each node it lists, its ``gpus_per_node`` where it gave one; ``policies.gang``) is a
``PolicyViolation`` in the daemon and in the simulator alike.
"""

from __future__ import annotations

from policies.decisions import Start, Suspend, Wait
from policies.snapshot import FULL_POWER, CapStep, JobRequest, RunningJob, Snapshot
from scheduler.errors import PolicyViolation

#: Float slack on the power budget: sums of draws in a different order may differ in the last bits.
BUDGET_SLACK = 1e-9


class Ledger:
    """One round's bookkeeping of room and power; every check raises ``PolicyViolation`` naming the policy."""

    def __init__(self, snapshot: Snapshot, policy_name: str):
        self.snapshot, self.policy_name = snapshot, policy_name
        self.waiting = {job.job_id: job for job in snapshot.waiting}
        self.answered: set[str] = set()
        self.draw_w = snapshot.power_draw_w
        self.free_in_pool = {p.zone: p.free_gpus for p in snapshot.pools}
        # pools with nodes: node -> its free GPUs, and its zone
        self.free_on_node: dict[str, int] = {}
        self._zone_of_node: dict[str, str] = {}
        for p in snapshot.pools:
            if p.node_ids:
                self.free_on_node.update(zip(p.node_ids, p.free_by_node))
                self._zone_of_node.update(dict.fromkeys(p.node_ids, p.zone))
        self._zones_with_nodes = set(self._zone_of_node.values())
        self._slots = None  # GPU id -> slot, built on the first start on listed GPUs
        self._taken: set[str] = set()  # GPUs started on this round
        self._freed: set[str] = set()  # GPUs of jobs suspended this round (free once they stop)

    def _offered(self, job_id: str, verb: str) -> JobRequest:
        job = self.waiting.get(job_id)
        if job is None:
            raise PolicyViolation(f"{self.policy_name} {verb} {job_id}, which it was not offered")
        if job_id in self.answered:
            raise PolicyViolation(f"{self.policy_name} answered twice for {job_id}")
        self.answered.add(job_id)
        return job

    def start(self, decision: Start) -> tuple[JobRequest, CapStep]:
        """Check a start and book its room and draw; returns the job and the cap step it runs at."""
        job = self._offered(decision.job_id, "started")
        if job.zones and decision.zone not in job.zones:
            raise PolicyViolation(f"{self.policy_name} started {job.job_id} in {decision.zone}, not in {job.zones}")
        step = cap_step(job, decision.cap_fraction, self.policy_name)
        if decision.until_s is not None and not job.interruptible:
            raise PolicyViolation(f"{self.policy_name} planned to suspend {job.job_id}, which is not interruptible")
        per_node = self._per_node(job, decision)
        if decision.gpu_ids:
            self._take_gpus(job, decision, per_node)
        elif decision.zone in self._zones_with_nodes:
            self._take_nodes(job, decision, per_node)
        else:
            if decision.nodes:
                raise PolicyViolation(f"{self.policy_name} spread {job.job_id} over nodes in {decision.zone}, a pool "
                                      "without nodes")
            free = self.free_in_pool.get(decision.zone, -1)
            if free < job.gpus:
                raise PolicyViolation(f"{self.policy_name} started {job.job_id} in {decision.zone} without room")
            self.free_in_pool[decision.zone] = free - job.gpus
        draw_w = job.gpus * (job.power_w or 0.0) * step.power_fraction
        budget_w = self.snapshot.power_budget_w
        if budget_w is not None and self.draw_w + draw_w > budget_w * (1 + BUDGET_SLACK):
            raise PolicyViolation(f"{self.policy_name} started {job.job_id} over the power budget")
        self.draw_w += draw_w
        return job, step

    def _per_node(self, job: JobRequest, decision: Start) -> int:
        """Check the start's layout as a gang; returns the GPUs it takes on each of its nodes."""
        nodes = decision.placement
        name = f"{self.policy_name} started {job.job_id}"
        if decision.nodes and (decision.node_id != nodes[0][0]
                               or decision.gpu_ids != tuple(g for _, ids in nodes for g in ids)):
            raise PolicyViolation(f"{name} with a node_id or gpu_ids that are not those of its nodes")
        if len({node_id for node_id, _ in nodes}) != len(nodes):
            raise PolicyViolation(f"{name} on nodes that are listed twice")
        if job.gpus % len(nodes):
            raise PolicyViolation(f"{name} on {len(nodes)} nodes, which cannot hold its {job.gpus} GPUs evenly")
        per_node = job.gpus // len(nodes)
        pooled = not decision.gpu_ids and decision.zone not in self._zones_with_nodes  # no node boundaries
        if job.gpus_per_node is not None and per_node != job.gpus_per_node and not pooled:
            raise PolicyViolation(f"{name} on {len(nodes)} node{'s' if len(nodes) > 1 else ''} with {per_node} GPUs "
                                  f"each; it asked for {job.gpus_per_node} per node")
        return per_node

    def _take_gpus(self, job: JobRequest, decision: Start, per_node: int) -> None:
        if self._slots is None:
            self._slots = {g.gpu_id: g for g in self.snapshot.gpus}
        if len(decision.gpu_ids) != job.gpus or len(set(decision.gpu_ids)) != job.gpus:
            raise PolicyViolation(f"{self.policy_name} started {job.job_id} on GPUs {', '.join(decision.gpu_ids)}; "
                                  f"it asked for {job.gpus} different ones")
        for node_id, gpu_ids in decision.placement:
            if len(gpu_ids) != per_node:
                raise PolicyViolation(f"{self.policy_name} started {job.job_id} on {len(gpu_ids)} GPUs of node "
                                      f"{node_id}, not the {per_node} its gang takes on each node")
            for gpu_id in gpu_ids:
                slot = self._slots.get(gpu_id)
                if slot is None or slot.zone != decision.zone or slot.node_id != node_id:
                    raise PolicyViolation(f"{self.policy_name} started {job.job_id} on GPU {gpu_id}, which is not on "
                                          f"node {node_id} in {decision.zone}")
                if gpu_id in self._taken or (slot.busy and gpu_id not in self._freed):
                    raise PolicyViolation(f"{self.policy_name} started {job.job_id} on GPU {gpu_id}, which is busy")
        self._taken.update(decision.gpu_ids)

    def _take_nodes(self, job: JobRequest, decision: Start, per_node: int) -> None:
        """A start on a pool with nodes: ``per_node`` free on every node it lists, all of them in its zone."""
        for node_id, _ in decision.placement:
            if self._zone_of_node.get(node_id) != decision.zone:
                raise PolicyViolation(f"{self.policy_name} started {job.job_id} on node {node_id}, which is not a "
                                      f"node of {decision.zone}")
            free = self.free_on_node[node_id]
            if free < per_node:
                raise PolicyViolation(f"{self.policy_name} started {job.job_id} on node {node_id} in {decision.zone} "
                                      f"without room: {free} free, {per_node} needed")
        for node_id, _ in decision.placement:
            self.free_on_node[node_id] -= per_node
        self.free_in_pool[decision.zone] -= job.gpus

    def wait(self, decision: Wait) -> None:
        self._offered(decision.job_id, "answered")

    def suspend(self, decision: Suspend) -> RunningJob:
        """Check a suspension and free the job's room and draw; returns the running job."""
        job = next((r for r in self.snapshot.running if r.job_id == decision.job_id), None)
        if job is None or not job.interruptible:
            raise PolicyViolation(f"{self.policy_name} suspended {decision.job_id}, which is not a running "
                                  "interruptible job")
        if job.gpu_ids:
            self._freed.update(job.gpu_ids)
        elif job.zone in self.free_in_pool:
            self.free_in_pool[job.zone] += job.gpus
            for node_id in job.nodes or (job.node_id,):  # a suspended gang frees every node it ran on
                if node_id in self.free_on_node:
                    self.free_on_node[node_id] += job.gpus // len(job.nodes or (job.node_id,))
        self.draw_w -= job.draw_w
        return job

    def unanswered(self) -> list[str]:
        """The offered jobs the policy said nothing about."""
        if len(self.answered) == len(self.waiting):
            return []
        return [job_id for job_id in self.waiting if job_id not in self.answered]


def cap_step(job: JobRequest, cap_fraction: float, policy_name: str) -> CapStep:
    """How ``job`` runs at ``cap_fraction``: full power, or a step of its power profile (any other cap is a
    violation: the daemon used to run it at full power and the simulator refused it)."""
    if cap_fraction >= 1.0:
        return FULL_POWER
    for step in (job.power_profile.steps if job.power_profile else ()):
        if abs(step.cap_fraction - cap_fraction) < 1e-9:
            return step
    raise PolicyViolation(f"{policy_name} chose cap {cap_fraction} for {job.job_id}, which its profile does not list")
