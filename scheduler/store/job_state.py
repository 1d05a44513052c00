"""The lifecycle of a job: its states and the only transitions allowed between them.

::

    pending   -> running, deferred, cancelled, failed
    deferred  -> pending, running, cancelled, failed
    running   -> succeeded, failed, cancelled, suspended, pending
    suspended -> pending, running, cancelled, failed
    succeeded, failed, cancelled: terminal

- pending: queued, waiting for a free GPU in an allowed zone.
- deferred: the policy holds it back on purpose (a cleaner window is coming within its deadline).
- running: a run (attempt or resumed segment) is executing on a worker.
- suspended: an interruptible job stopped at a checkpoint, to resume later.
- running -> pending: its run was lost (its worker, node or controller died); the job is queued again.

``scheduler.store.jobs.JobStore.transition`` is the one place that enforces this table and records each change with
its reason.
"""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    """A job's state; see the module docstring for the allowed transitions."""

    PENDING = "pending"
    DEFERRED = "deferred"
    RUNNING = "running"
    SUSPENDED = "suspended"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def waiting(self) -> bool:
        """A job the scheduler may start: queued or held back."""
        return self in WAITING

    def can_go_to(self, target: JobState) -> bool:
        return target in ALLOWED[self]


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WAITING = frozenset({JobState.PENDING, JobState.DEFERRED, JobState.SUSPENDED})

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.DEFERRED, JobState.CANCELLED, JobState.FAILED}),
    JobState.DEFERRED: frozenset({JobState.PENDING, JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.SUSPENDED, JobState.PENDING}
    ),
    JobState.SUSPENDED: frozenset({JobState.PENDING, JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class RunStatus(str, Enum):
    """How one run (attempt or resumed segment) of a job ended; ``running`` while it has not."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"
    LOST = "lost"
