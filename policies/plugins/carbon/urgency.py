"""Urgency first (QueueSort): the order in which the carbon-aware profile considers the waiting jobs."""

from __future__ import annotations

from typing import Sequence

from policies.framework import CycleState
from policies.plugins.carbon.planner import plan_of
from policies.snapshot import JobRequest


class UrgencyFirst:
    """QueueSort: slack exhausted first (earliest deadline first: deadlines are promises; priority breaks ties),
    then higher priority (users' ``--priority``; traces have none), then most carbon lost per GPU-hour waited."""

    name = "UrgencyFirst"

    def sort(self, state: CycleState, jobs: Sequence[JobRequest]) -> list[JobRequest]:
        def key(job: JobRequest):
            plan = plan_of(state, job)
            if plan is None:
                return (1, -job.priority, 0.0, job.submitted_s, job.job_id)
            if plan.must_start:
                return (0, plan.deadline_s, -job.priority, job.submitted_s, job.job_id)
            return (1, -job.priority, -plan.gain_per_gpu_h, job.submitted_s, job.job_id)

        return sorted(jobs, key=key)
