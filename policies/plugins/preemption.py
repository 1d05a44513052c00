"""Preemption: suspend running interruptible jobs that can afford a pause, so that a job that is due starts on time.

Carbon-aware scheduling gathers work into clean hours; where room or power is scarce, a job whose slack has run
out may find both taken by jobs that could have waited. Those that are interruptible are suspended at a
checkpoint (they wait again and resume later), as Kubernetes preempts pods of lower priority.
"""

from __future__ import annotations

from policies import gang
from policies.decisions import Suspend
from policies.framework import CycleState, is_due, job_draw_w
from policies.snapshot import JobRequest, RunningJob


class Preempt:
    """Preempt: a job that is due (it must start now at full speed to meet its deadline) and lacks room or power
    for that suspends running interruptible jobs that can afford the pause.

    One can afford it when, resumed after the due job has run, it would still meet its own deadline at full
    speed: its slack (deadline - now - work left) is at least the due job's run. The ones with most slack go
    first. Room is made in an allowed zone for the due job's gang (the place needing fewest suspensions; the
    first of equals): on one node, for a job that may run on one, else over the nodes of the zone; a suspended
    gang frees its GPUs on all its nodes. Then power, at full power, from the rest. Nothing is suspended unless
    both are then enough.
    """

    name = "Preempt"

    def preempt(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> None:
        if not is_due(job, state.now_s):
            return  # it can wait for room
        run_s = job.expected_duration_s
        room = any(state.cluster.fits(z, job.gpus, job.gpus_per_node) for z in zones)
        short_w = 0.0 if state.budget_left_w is None else job_draw_w(job) - state.budget_left_w
        if room and short_w <= 1e-9 or not state.snapshot.running:
            return
        victims = sorted((r for r in state.snapshot.running if self._can_pause(state, r, run_s)),
                         key=lambda r: r.deadline_s - r.remaining_s, reverse=True)  # most slack first
        chosen = [] if room else self._for_room(state, job, zones, victims)
        if chosen is None:
            return
        short_w -= sum(r.draw_w for r in chosen)
        for r in victims:
            if short_w <= 1e-9:
                break
            if r not in chosen:
                chosen.append(r)
                short_w -= r.draw_w
        if short_w > 1e-9:
            return
        for r in chosen:
            state.notes[self.name, r.job_id] = True
            state.suspended.append(Suspend(r.job_id, f"suspended at a checkpoint to make room for job {job.job_id}, "
                                                     "which is due; it resumes later"))
            state.cluster.release(r)
            if state.budget_left_w is not None:
                state.budget_left_w += r.draw_w

    def _can_pause(self, state: CycleState, r: RunningJob, run_s: float) -> bool:
        return (r.interruptible and r.deadline_s is not None and r.remaining_s is not None
                and (self.name, r.job_id) not in state.notes and r.deadline_s - state.now_s - r.remaining_s >= run_s)

    @staticmethod
    def _for_room(state: CycleState, job: JobRequest, zones: tuple[str, ...],
                  victims: list[RunningJob]) -> list[RunningJob] | None:
        """The fewest victims that make room for ``job``'s gang in one of ``zones``: on one node (each node in
        turn, counting only the victims on it) where the job may run on one node, then over the whole zone where
        it may spread; None when none can."""
        cluster, gpus, per_node = state.cluster, job.gpus, job.gpus_per_node
        one_node = per_node is None or per_node == gpus
        best = None
        for zone in zones:
            free = cluster.free_counts(zone)
            targets: list[str | None] = list(free) if one_node or zone in cluster.pooled else []
            if zone not in cluster.pooled and gang.shapes(gpus, per_node) != (gpus,):
                targets.append(None)  # the whole zone
            for target in targets:
                have, picks = dict(free), []
                for r in victims:
                    if _room(cluster, zone, have, target, gpus, per_node):
                        break
                    if r.zone != zone:
                        continue
                    held = cluster.held_by(r)
                    if target is not None and target not in held:
                        continue
                    picks.append(r)
                    for node, count in held.items():
                        have[node] = have.get(node, 0) + count
                if _room(cluster, zone, have, target, gpus, per_node) and (best is None or len(picks) < len(best)):
                    best = picks
        return best


def _room(cluster, zone: str, have: dict[str, int], target: str | None, gpus: int, per_node: int | None) -> bool:
    """Whether ``have`` (free GPUs per node) has room for the gang: on node ``target``, or anywhere in the zone."""
    if target is not None:
        return have.get(target, 0) >= gpus
    return gang.fit(have.values(), gpus, per_node) is not None
