"""The live cluster as the scheduling core's executor: decisions carried out through the Ray controller and
recorded in the store."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from policies.decisions import Decision, Start, Suspend, Wait
from policies.snapshot import CapStep, JobRequest, RunningJob
from policies.status import Code
from scheduler.clock import from_unix_s
from scheduler.cluster.inventory import GpuInfo
from scheduler.cluster.link import ControllerLink
from scheduler.daemon.queue import WaitingQueue
from scheduler.daemon.timers import Timers
from scheduler.errors import PolicyViolation
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore
from scheduler.store.launch import Launch
from scheduler.store.queue import WaitRecord

log = logging.getLogger(__name__)

#: How an earlier run ended when the next one resumes (WATTSCHED_RESUMING=1): stopped at a checkpoint, or lost.
RESUMED_AFTER = frozenset({RunStatus.SUSPENDED.value, RunStatus.LOST.value})


class ControllerExecutor:
    """One round's executor (``scheduler.core.Executor``) for the daemon: starts and stops jobs through the
    controller, hands waits with their status to the waiting queue (which writes those that changed and offers
    each job again when its retry time comes or room frees), and sets the timers of runs (a planned suspension, a
    time limit).

    A job the policy suspends keeps its GPUs until it has stopped at a checkpoint; a start on those GPUs in the
    same round waits for it (its finish runs the next tick), where the simulator's jobs stop at once.
    """

    def __init__(self, store: JobStore, controller: ControllerLink, inventory: Sequence[GpuInfo], timers: Timers,
                 notify: Callable[[], None], policy_name: str, queue: WaitingQueue):
        self.store, self.controller, self.inventory, self.timers = store, controller, inventory, timers
        self.notify, self.policy_name, self.queue = notify, policy_name, queue
        self._stopping: dict[str, str] = {}  # GPU id -> the job suspended on it this round

    def start(self, decision: Start, job: JobRequest, step: CapStep) -> None:
        waits_for = next((self._stopping[g] for g in decision.gpu_ids if g in self._stopping), None)
        if waits_for is not None:  # its GPUs free only once that job has checkpointed and exited
            self.queue.blocked(decision.job_id, (decision.zone,), WaitRecord(
                decision.job_id, f"waiting for job {waits_for} to stop at a checkpoint", deferred=False,
                code=Code.UNSCHEDULABLE.value, plugin=self.policy_name))
            return
        row = self.store.get(decision.job_id)
        reason = decision.reason or f"running in zone {decision.zone}"
        where = ", ".join(node_id[:8] for node_id, _ in decision.placement)
        where = f"on nodes {where}" if len(decision.placement) > 1 else f"on node {where}"
        run = self.store.start_run(row.id, decision.node_id, decision.zone, decision.gpu_ids,
                                   decision.power_cap_w, f"{reason} {where}", step)
        # the job's scripts resume from their checkpoint when an earlier run was stopped (suspended, preempted) or lost
        resuming = any(r.status in RESUMED_AFTER for r in row.runs)
        try:
            # the placement node by node (rank 0's first): the controller reserves every worker of it in one step
            placement = [list(gpu_ids) for _, gpu_ids in decision.placement]
            self.controller.call("start_job", row.id, run.id, row.kind, row.spec, list(decision.gpu_ids), row.workdir,
                                 decision.power_cap_w, step.speed, run.attempt, resuming, Launch.of(row).to_dict(),
                                 placement)
        except Exception as exc:  # the controller refused (worker busy or gone) or is lost: keep the job queued
            log.warning("could not start job %s: %s", row.id, exc)
            self.store.abort_run(run.id, one_line(exc))
            self.queue.came(row.id)  # read again, and offered again, at the next round
            return
        self.queue.started(row.id)
        for gpu in self.inventory:
            if gpu.worker_id in decision.gpu_ids:
                gpu.busy_job = row.id
        if decision.until_s is not None:
            self.timers.suspend_at(row.id, run.id, decision.until_s)
        if row.time_limit_s:
            used_s, _ = self.store.run_seconds([row.id]).get(row.id, (0.0, 0))
            self.timers.time_limit(row.id, run.id, max(0.0, row.time_limit_s - used_s))
        self.notify()

    def suspend(self, decision: Suspend, job: RunningJob) -> None:
        """Stop a running interruptible job at a checkpoint, as the policy asks, to make room for a job that is
        due; it waits again with the policy's reason once stopped."""
        if self.store.request_suspend(job.job_id, decision.reason):
            log.info("suspending job %s: %s", job.job_id, decision.reason)
            self.controller.send("cancel_job", job.job_id, "suspended")
        # else it has just ended or its user is cancelling it: either way the tick its finish triggers places the
        # due job
        self._stopping.update(dict.fromkeys(job.gpu_ids, job.job_id))

    def wait(self, decision: Wait) -> None:
        """The queue keeps the job's hold and offers it again at its retry time (its timer armed by the daemon)
        or when room frees; the wait is written at the end of the round, if it says something new."""
        reason = decision.reason
        if decision.retry_at_s is not None and decision.deferred:
            reason += f"; next look at {from_unix_s(decision.retry_at_s):%H:%M} UTC"
        status = decision.status
        self.queue.waited(decision, WaitRecord(decision.job_id, reason, decision.deferred, code=status.code.value,
                                               plugin=status.plugin or self.policy_name))

    def refuse(self, decision: Decision, violation: PolicyViolation) -> None:
        # A policy bug must not take the daemon down: the job keeps waiting, saying why, and the log has it.
        log.error("refused a decision of policy %s: %s", self.policy_name, violation)
        if not isinstance(decision, Suspend):
            self.queue.blocked(decision.job_id, (), WaitRecord(
                decision.job_id, f"waiting: the policy's decision was refused ({violation})", deferred=False,
                code=Code.UNSCHEDULABLE.value, plugin=self.policy_name))

    def unanswered(self, job_ids: Sequence[str]) -> None:
        """They keep their state and reason, and are offered again when room frees."""
        for job_id in job_ids:
            self.queue.blocked(job_id)


def one_line(exc: BaseException | Any) -> str:
    """An exception's last line (Ray wraps the cause in a long traceback)."""
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
