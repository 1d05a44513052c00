"""Urgency first (QueueSort): the order in which the carbon-aware profile considers the waiting jobs."""

from __future__ import annotations

from typing import Sequence

from policies.framework import DUE_EPS_S, CycleState
from policies.plugins.carbon.planner import plan_of
from policies.plugins.pressure import pressure_of
from policies.snapshot import JobRequest


class UrgencyFirst:
    """QueueSort: slack exhausted first (earliest deadline first: deadlines are promises; priority breaks ties),
    then higher priority (users' ``--priority``; traces have none), then most carbon lost per GPU-hour waited.

    When the queue is pressed (``policies.plugins.pressure``: its demand already exceeds the room before some
    deadline), every job goes in order of its latest start, as earliest-deadline-first would take them, except
    that the jobs already past their latest start go last: they are late whatever happens, and served first they
    would make late the jobs that can still be on time too (earliest-deadline-first's domino effect in overload).
    A job without a deadline was due at its submission: under pressure it too goes after those that can still
    be on time."""

    name = "UrgencyFirst"

    def sort(self, state: CycleState, jobs: Sequence[JobRequest]) -> list[JobRequest]:
        pressure = pressure_of(state)
        if pressure is not None and pressure.tight:
            now = state.now_s
            return sorted(jobs, key=lambda j: (_latest_start(j) < now - DUE_EPS_S, _latest_start(j), -j.priority,
                                               j.submitted_s, j.job_id))

        def key(job: JobRequest):
            plan = plan_of(state, job)
            if plan is None:
                return (1, -job.priority, 0.0, job.submitted_s, job.job_id)
            if plan.must_start:
                return (0, plan.deadline_s, -job.priority, job.submitted_s, job.job_id)
            return (1, -job.priority, -plan.gain_per_gpu_h, job.submitted_s, job.job_id)

        return sorted(jobs, key=key)


def _latest_start(job: JobRequest) -> float:
    if job.deadline_s is None:
        return job.submitted_s  # no flexibility: it was due at submission
    return job.deadline_s - (job.expected_duration_s or 0.0)
