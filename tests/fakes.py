"""Test doubles shared by several test modules (imported as ``from fakes import ...``: tests/ is on sys.path)."""

from datetime import datetime, timedelta


class FakeClock:
    """A clock the test sets (``clock.now = ...``) or moves (``clock.advance(minutes=5)``); aware datetimes."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


class RecordingController:
    """Stands in for the daemon's controller link: records what the daemon calls and sends."""

    def __init__(self):
        self.calls = []

    def call(self, method, *args):
        self.calls.append((method, *args))

    def send(self, method, *args):
        self.calls.append((method, *args))

    def started(self):
        """The ids of the jobs the daemon asked to start, in order."""
        return [args[0] for method, *args in self.calls if method == "start_job"]


class RecordingExecutor:
    """A scheduling-core executor (``scheduler.core.Executor``) that keeps what it was asked to do, as tuples in
    ``done``: ("start", job id, *details(decision, job, step)), ("suspend", id), ("wait", id), ("refused", id,
    message), and ("unanswered", ids) when ``record_unanswered``."""

    def __init__(self, details=lambda decision, job, step: (), record_unanswered: bool = False):
        self.done = []
        self._details, self._record_unanswered = details, record_unanswered

    def start(self, decision, job, step):
        self.done.append(("start", decision.job_id, *self._details(decision, job, step)))

    def suspend(self, decision, job):
        self.done.append(("suspend", decision.job_id))

    def wait(self, decision):
        self.done.append(("wait", decision.job_id))

    def refuse(self, decision, violation):
        self.done.append(("refused", decision.job_id, str(violation)))

    def unanswered(self, job_ids):
        if self._record_unanswered:
            self.done.append(("unanswered", tuple(job_ids)))


class FixedPolicy:
    """A policy that answers every snapshot with the decisions it was made with."""

    name = "answers"

    def __init__(self, *decisions):
        self.decisions = decisions

    def decide(self, snapshot):
        return list(self.decisions)
