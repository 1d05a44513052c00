"""One scheduling round: ask the policy about a snapshot, check each decision, hand it to the executor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from policies.decisions import Decision, Start, Suspend, Wait
from policies.registry import Policy
from policies.snapshot import CapStep, JobRequest, RunningJob, Snapshot
from scheduler.core.ledger import Ledger
from scheduler.errors import PolicyViolation


class Executor(Protocol):
    """What carries a round's decisions out: the daemon's Ray controller or the simulator's virtual cluster.

    The core has checked each decision against the snapshot before it calls these (see ``Ledger``).
    """

    def start(self, decision: Start, job: JobRequest, step: CapStep) -> None:
        """Start ``job`` as ``decision`` says, running at ``step`` (its cap's speed and draw)."""

    def suspend(self, decision: Suspend, job: RunningJob) -> None:
        """Stop running interruptible ``job`` at a checkpoint; it waits again."""

    def wait(self, decision: Wait) -> None:
        """Leave the job waiting, for the reason and until the time the decision's status gives."""

    def refuse(self, decision: Decision, violation: PolicyViolation) -> None:
        """A decision broke the cluster's rules: the simulator raises, the daemon logs it and keeps the job
        waiting (a policy bug must not take a live daemon down)."""

    def unanswered(self, job_ids: Sequence[str]) -> None:
        """Waiting jobs the policy said nothing about: they keep waiting, and are offered again when the cluster
        changes."""


class SchedulingCore:
    """Runs ``policy`` over snapshots and applies its decisions through an executor, each checked once here."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def run(self, snapshot: Snapshot, executor: Executor) -> list[Decision]:
        """One round; returns the policy's decisions (refused ones included), in the order it gave them."""
        decisions = list(self.policy.decide(snapshot))
        ledger = Ledger(snapshot, self.policy.name)
        for decision in decisions:
            try:
                if isinstance(decision, Start):
                    job, step = ledger.start(decision)
                    executor.start(decision, job, step)
                elif isinstance(decision, Wait):
                    ledger.wait(decision)
                    executor.wait(decision)
                elif isinstance(decision, Suspend):
                    executor.suspend(decision, ledger.suspend(decision))
                else:
                    raise PolicyViolation(f"{self.policy.name} answered {decision!r}, which is not a decision")
            except PolicyViolation as violation:
                executor.refuse(decision, violation)
        left = ledger.unanswered()
        if left:
            executor.unanswered(left)
        return decisions
