"""Preemption: suspend running interruptible jobs that can afford a pause, so that a job that is due starts on time.

Carbon-aware scheduling gathers work into clean hours; where room or power is scarce, a job whose slack has run
out may find both taken by jobs that could have waited. Those that are interruptible are suspended at a
checkpoint (they wait again and resume later), as Kubernetes preempts pods of lower priority.
"""

from __future__ import annotations

from policies.decisions import Suspend
from policies.framework import CycleState, is_due, job_draw_w
from policies.snapshot import JobRequest, RunningJob


class Preempt:
    """Preempt: a job that is due (it must start now at full speed to meet its deadline) and lacks room or power
    for that suspends running interruptible jobs that can afford the pause.

    One can afford it when, resumed after the due job has run, it would still meet its own deadline at full
    speed: its slack (deadline - now - work left) is at least the due job's run. The ones with most slack go
    first. Room is made on one node of an allowed zone (the one needing fewest suspensions; the first of
    equals), then power, at full power, from the rest. Nothing is suspended unless both are then enough.
    """

    name = "Preempt"

    def preempt(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> None:
        if not is_due(job, state.now_s):
            return  # it can wait for room
        run_s = job.expected_duration_s
        room = any(state.cluster.fits(z, job.gpus) for z in zones)
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
            state.cluster.release(r.zone, r.node_id, r.gpus, r.gpu_ids)
            if state.budget_left_w is not None:
                state.budget_left_w += r.draw_w

    def _can_pause(self, state: CycleState, r: RunningJob, run_s: float) -> bool:
        return (r.interruptible and r.deadline_s is not None and r.remaining_s is not None
                and (self.name, r.job_id) not in state.notes and r.deadline_s - state.now_s - r.remaining_s >= run_s)

    @staticmethod
    def _for_room(state: CycleState, job: JobRequest, zones: tuple[str, ...],
                  victims: list[RunningJob]) -> list[RunningJob] | None:
        """The fewest victims that free ``job.gpus`` on one node of one of ``zones``; None when none can."""
        best = None
        for zone in zones:
            for node_id, free in state.cluster.free.get(zone, {}).items():
                have = free if isinstance(free, int) else len(free)
                picks = []
                for r in victims:
                    if have >= job.gpus:
                        break
                    if r.zone == zone and r.node_id == node_id:
                        picks.append(r)
                        have += r.gpus
                if have >= job.gpus and (best is None or len(picks) < len(best)):
                    best = picks
        return best
