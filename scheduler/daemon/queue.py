"""The daemon's waiting queue, kept in memory between scheduling rounds, so that a round costs what changed rather
than what waits.

Each round offers the policy only the jobs whose situation changed, as the simulator does
(``scheduler.simulation.engine``): jobs that arrived or came back (submitted, released, a run that ended and left
its job waiting), jobs whose retry time came (``Wait.retry_at_s``), jobs waiting for room where GPUs were freed
(``Status.room_in``), and jobs whose begin time came or whose dependencies were met. The others are not offered,
and the room they keep (``Wait.hold``) is handed back to the policy in the snapshot's ``holds``.

The policy still weighs the whole queue: the demand of the jobs with a deadline that a round does not offer (their
GPUs, work left, deadline, and when they may start) is kept in a ``policies.backlog.Backlog``, handed to it as the
snapshot's ``backlog``, as the simulator does. A job parked on dependencies is left out of it (when it may start
is not known).

Jobs kept back by their user's own constraints are *parked*: a job waiting for its begin time sits in a heap until
then (the daemon arms one timer, for the earliest time of the queue), a job waiting for other jobs is looked at
again when one of those leaves the queue or its run ends. Their reason is written once, not every round.

The queue is the database's, read in full when a term as the leader begins (``reload``); it is then kept up by the
daemon's own events (``came``, ``went``, the inventory each round). Two nets catch what those cannot see (another
daemon's API serving a submission, a row changed by hand): every ``sync_s`` a round compares the ids of the
waiting jobs with the database's, and every ``full_round_s`` it reads every waiting job again and offers all that
may start (estimates learned since, a forecast refreshed, a running job's end that moved).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from policies.backlog import Backlog, Demand
from policies.decisions import Wait
from policies.snapshot import Hold, JobRequest
from policies.status import Code
from scheduler.clock import Clock, to_unix_s
from scheduler.cluster.inventory import GpuInfo
from scheduler.store.job_state import JobState
from scheduler.store.jobs import JobStore
from scheduler.store.queue import QueuedJob, WaitRecord, record_waits, state_after, waiting_ids, waiting_jobs

#: Seconds between full rounds: every waiting job read again from the database, and every one that may start
#: offered to the policy (the safety net; see the module docstring).
FULL_ROUND_S = 300.0
#: States of a dependency that can never succeed any more.
ENDED = frozenset(s.value for s in JobState if s.terminal)
#: A timer armed this close to the time it is for is armed again after a round (it may have fired a little early).
REARM_WITHIN_S = 1.0


@dataclass(frozen=True)
class Offer:
    """What a round offers the policy: ``jobs`` in arrival order, the ``holds`` of the waiting jobs not among them,
    and whether it is a full round (every job that may start is offered; the policy is asked even when none is,
    as it may weigh the running jobs)."""

    jobs: tuple[QueuedJob, ...]
    holds: tuple[Hold, ...]
    full: bool


class WaitingQueue:
    """The waiting jobs between rounds, and which of them the next round offers.

    Notes from any thread (``came``, ``went``, ``reload``, ``reoffer``) are taken at the start of the next round;
    everything else runs in the tick thread, under the daemon's tick lock: ``begin_round`` says what to offer,
    ``started``, ``waited`` and ``blocked`` hear what became of each offered job, ``end_round`` records the room
    left and writes the waits that changed.

    sync_s: how often a round compares the waiting jobs' ids with the database's; full_round_s: how often a round
    reads the whole queue again (see the module docstring). work_s: the work a job not offered yet has left, in
    seconds at full speed (None: unknown), for the backlog of a job parked until its begin time.
    """

    def __init__(self, store: JobStore, clock: Clock, sync_s: float, full_round_s: float = FULL_ROUND_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 work_s: Callable[[QueuedJob], float | None] = lambda job: None):
        self.store, self.clock, self._work_s = store, clock, work_s
        #: the demand of the waiting jobs with a deadline that the next round does not offer (``Snapshot.backlog``)
        self.backlog = Backlog()
        self.sync_s, self.full_round_s = sync_s, full_round_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._came: set[str] = set()  # may wait now: submitted, released, a run ended
        self._went: set[str] = set()  # no longer wait: cancelled, held
        self._full = True  # read the whole queue again at the next round
        self._reoffer = False  # offer every job that may start at the next round
        self._jobs: dict[str, QueuedJob] = {}  # every waiting job, parked or not
        self._parked_until: dict[str, float] = {}  # job -> its begin time (Unix s)
        self._begin: list[tuple[float, str]] = []  # heap of (begin time, job); stale entries are passed over
        self._deps: dict[str, tuple[str, ...]] = {}  # job parked on dependencies -> those
        self._dependents: dict[str, set[str]] = {}  # job -> the parked jobs that wait for it
        self._recheck: set[str] = set()  # dependency-parked jobs to look at again
        self._blocked: dict[str, tuple[str, ...]] = {}  # job waiting for room -> the zones (empty: anywhere)
        self._retry_at: dict[str, float] = {}  # job -> when it is offered again (Unix s)
        self._retry: list[tuple[float, str]] = []  # heap of (retry time, job); stale entries are passed over
        self._holds: dict[str, Hold] = {}  # the room waiting jobs keep, from their last Wait
        self._offer: dict[str, None] = {}  # offered at the next round (ordered)
        self._requests: dict[str, JobRequest] = {}  # the jobs offered this round, as the policy sees them
        self._decided: list[str] = []  # jobs the policy decided on this round
        self._waits: list[WaitRecord] = []  # waits to write at the end of the round
        self._free: set[str] | None = None  # GPUs free after the last round (None: none yet)
        self._synced_at = self._full_at = float("-inf")
        self._armed_s: float | None = None  # the wake-up time of the timer last armed

    # --- notes, from any thread -----------------------------------------------------------------------------

    def came(self, job_id: str) -> None:
        """The job may be waiting now (submitted, released, or its run ended): read it at the next round."""
        with self._lock:
            if not self._full:  # (a round that reads everything needs no notes: a standby keeps none)
                self._came.add(job_id)
                self._went.discard(job_id)

    def went(self, job_id: str) -> None:
        """The job no longer waits (cancelled, held)."""
        with self._lock:
            if not self._full:
                self._went.add(job_id)
                self._came.discard(job_id)

    def reload(self) -> None:
        """Read the whole queue again at the next round and offer every job that may start (a term begins or
        ends, the controller came back, a round failed half-way)."""
        with self._lock:
            self._full = True
            self._came, self._went = set(), set()

    def reoffer(self) -> None:
        """Offer every job that may start at the next round (the carbon forecasts changed)."""
        with self._lock:
            self._reoffer = True

    # --- a round, in the tick thread ------------------------------------------------------------------------

    def begin_round(self, inventory: Sequence[GpuInfo]) -> Offer:
        """What to offer this round. Reasons of jobs parked now are written here."""
        now = self.clock()
        mono = self._monotonic()
        with self._lock:
            came, went, full, reoffer = self._came, self._went, self._full, self._reoffer
            self._came, self._went, self._full, self._reoffer = set(), set(), False, False
        self._decided = []
        full = full or mono - self._full_at >= self.full_round_s
        if full:
            self._load_all(now)
            self._full_at = self._synced_at = mono
        else:
            if mono - self._synced_at >= self.sync_s:
                known, current = set(self._jobs), waiting_ids(self.store.sessions)
                came |= current - known
                went |= known - current - came
                self._synced_at = mono
            self._apply(came, went, now)
            self._wake(now, inventory, reoffer)
        self._flush_waits()
        offered = [self._jobs[j] for j in self._offer if j in self._jobs]
        self._offer = {}
        for job in offered:  # what they wait for is decided again now; their demand is the policy's to derive
            self._blocked.pop(job.id, None)
            self._retry_at.pop(job.id, None)
            self.backlog.discard(job.id)
        offered.sort(key=lambda j: (j.submitted_at, j.id))
        ids = {j.id for j in offered}
        holds = tuple(h for job_id, h in self._holds.items() if job_id not in ids)
        return Offer(tuple(offered), holds, full)

    def offered(self, requests: Sequence[JobRequest]) -> None:
        """The offered jobs as the round's snapshot has them (their demand, should they be left waiting)."""
        self._requests = {r.job_id: r for r in requests}

    def started(self, job_id: str) -> None:
        """The job runs: it has left the queue."""
        self._decided.append(job_id)
        self._forget(job_id)

    def waited(self, decision: Wait, record: WaitRecord) -> None:
        """The policy left the job waiting: keep its hold, offer it again at its retry time, and when it waits for
        room, when room frees where it waits (as the simulator does)."""
        job_id = decision.job_id
        self._decided.append(job_id)
        if decision.hold is not None:
            self._holds[job_id] = decision.hold
        else:
            self._holds.pop(job_id, None)
        now_s = to_unix_s(self.clock())
        if decision.retry_at_s is not None and decision.retry_at_s > now_s:
            self._retry_at[job_id] = decision.retry_at_s
            heapq.heappush(self._retry, (decision.retry_at_s, job_id))
        if not decision.deferred or decision.retry_at_s is None or decision.retry_at_s <= now_s:
            self._blocked[job_id] = decision.room_in
            self._keep_demand(job_id, now_s)
        else:
            self._keep_demand(job_id, decision.retry_at_s)
        self._waits.append(record)

    def blocked(self, job_id: str, zones: tuple[str, ...] = (), record: WaitRecord | None = None) -> None:
        """The job waits for room in ``zones`` (empty: anywhere): a start that must wait for a suspended job's
        GPUs, a refused decision, a job the policy did not answer."""
        self._decided.append(job_id)
        self._blocked[job_id] = zones
        self._keep_demand(job_id, to_unix_s(self.clock()))
        if record is not None:
            self._waits.append(record)

    def end_round(self, inventory: Sequence[GpuInfo]) -> None:
        """Write the round's waits that changed, and remember which GPUs are free now (starts marked theirs
        busy), to know next round where room was freed."""
        self._flush_waits()
        self._free = {g.worker_id for g in inventory if g.busy_job is None}
        self._requests = {}
        for job_id in self._decided:  # their state may have changed: the reasons of the jobs waiting for them say it
            self._recheck |= self._dependents.get(job_id, set())
        self._decided = []

    def wake_to_arm(self) -> float | None:
        """When the next parked or deferred job is due (Unix s), if a timer for it has yet to be armed."""
        while self._begin and self._parked_until.get(self._begin[0][1]) != self._begin[0][0]:
            heapq.heappop(self._begin)
        while self._retry and self._retry_at.get(self._retry[0][1]) != self._retry[0][0]:
            heapq.heappop(self._retry)
        wake = min([heap[0][0] for heap in (self._begin, self._retry) if heap], default=None)
        if wake is None:
            return None
        if wake == self._armed_s and to_unix_s(self.clock()) < wake - REARM_WITHIN_S:
            return None
        self._armed_s = wake
        return wake

    @property
    def waiting(self) -> int:
        """How many jobs wait, parked or not."""
        return len(self._jobs)

    @property
    def parked(self) -> int:
        """How many wait for their begin time or for other jobs."""
        return len(self._parked_until) + len(self._deps)

    # --- inside -------------------------------------------------------------------------------------------

    def _load_all(self, now: datetime) -> None:
        """Forget everything and read the queue again; every job that may start is offered."""
        self._jobs.clear()
        self._parked_until.clear()
        self._begin.clear()
        self._deps.clear()
        self._dependents.clear()
        self._recheck.clear()
        self._blocked.clear()
        self._retry_at.clear()
        self._retry.clear()
        self._holds.clear()
        self._offer = {}
        self._armed_s = None
        self.backlog = Backlog()
        self._admit(waiting_jobs(self.store.sessions), now)

    def _apply(self, came: set[str], went: set[str], now: datetime) -> None:
        for job_id in went:
            self._forget(job_id)
            self._recheck |= self._dependents.get(job_id, set())
        if not came:
            return
        for job_id in came:  # read again below: a job back from a run has changed
            self._forget(job_id)
            self._recheck |= self._dependents.get(job_id, set())  # its run may have succeeded
        self._admit(waiting_jobs(self.store.sessions, came), now)

    def _wake(self, now: datetime, inventory: Sequence[GpuInfo], reoffer: bool) -> None:
        now_s = to_unix_s(now)
        begun = []
        while self._begin and self._begin[0][0] <= now_s:
            at_s, job_id = heapq.heappop(self._begin)
            if self._parked_until.get(job_id) == at_s:
                del self._parked_until[job_id]
                begun.append(self._jobs[job_id])
        if begun:
            self._admit(begun, now)
        while self._retry and self._retry[0][0] <= now_s:
            at_s, job_id = heapq.heappop(self._retry)
            if self._retry_at.get(job_id) == at_s:
                self._offer[job_id] = None
        free = {g.worker_id: g.zone for g in inventory if g.busy_job is None}
        if self._free is not None and self._blocked:
            freed = {zone for worker_id, zone in free.items() if worker_id not in self._free}
            if freed:
                self._offer.update((j, None) for j, zones in self._blocked.items()
                                   if not zones or not freed.isdisjoint(zones))
        if reoffer:
            self._offer.update((j, None) for j in self._jobs if j not in self._parked_until and j not in self._deps)
        rechecks = [self._jobs[j] for j in self._recheck if j in self._deps]
        self._recheck = set()
        if rechecks:
            self._check_dependencies(rechecks)

    def _admit(self, jobs: list[QueuedJob], now: datetime) -> None:
        """Take jobs into the queue: park those kept back by a begin time or dependencies, offer the others."""
        with_deps = []
        for job in jobs:
            self._jobs[job.id] = job
            if job.not_before_at is not None and job.not_before_at > now:
                at_s = to_unix_s(job.not_before_at)
                self._parked_until[job.id] = at_s
                heapq.heappush(self._begin, (at_s, job.id))
                self._park(job, f"waiting for its begin time {job.not_before_at:%Y-%m-%d %H:%M} UTC",
                           Code.UNSCHEDULABLE)
                if job.deadline_at is not None and (work_s := self._work_s(job)) is not None:
                    self.backlog.put(Demand(job.id, tuple(job.zones or ()), job.gpus, work_s,
                                            to_unix_s(job.deadline_at), at_s))
            elif job.depends_on:
                with_deps.append(job)
            else:
                self._offer[job.id] = None
        if with_deps:
            self._check_dependencies(with_deps)

    def _check_dependencies(self, jobs: list[QueuedJob]) -> None:
        """Park the jobs whose dependencies have not all succeeded (saying on which, and whether they ever can
        be met); offer the others."""
        unmet = self.store.unmet_dependencies(jobs)
        for job in jobs:
            self._unpark_deps(job.id)
            pending = unmet.get(job.id)
            if not pending:
                self._offer[job.id] = None
                continue
            self._deps[job.id] = tuple(dep for dep, _ in pending)
            for dep, _ in pending:
                self._dependents.setdefault(dep, set()).add(job.id)
            reason = "waiting for " + ", ".join(f"job {dep} ({state})" for dep, state in pending)
            code = Code.UNSCHEDULABLE
            if any(state in ENDED for _, state in pending):
                reason += ": a dependency ended without succeeding and can never be met; cancel this job"
                code = Code.UNRESOLVABLE
            self._park(job, reason, code)

    def _keep_demand(self, job_id: str, ready_s: float) -> None:
        """Keep the demand of an offered job left waiting, ready from ``ready_s`` (jobs without a deadline, or
        whose work is unknown, have none)."""
        request = self._requests.get(job_id)
        if request is not None and request.deadline_s is not None and request.expected_duration_s is not None:
            self.backlog.put(Demand(job_id, request.zones, request.gpus, request.expected_duration_s,
                                    request.deadline_s, ready_s))

    def _park(self, job: QueuedJob, reason: str, code: Code) -> None:
        self._offer.pop(job.id, None)
        self._holds.pop(job.id, None)
        self.backlog.discard(job.id)
        self._waits.append(WaitRecord(job.id, reason, deferred=False, code=code.value))

    def _unpark_deps(self, job_id: str) -> None:
        for dep in self._deps.pop(job_id, ()):
            dependents = self._dependents.get(dep)
            if dependents is not None:
                dependents.discard(job_id)
                if not dependents:
                    del self._dependents[dep]

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self.backlog.discard(job_id)
        self._parked_until.pop(job_id, None)
        self._unpark_deps(job_id)
        self._blocked.pop(job_id, None)
        self._retry_at.pop(job_id, None)
        self._holds.pop(job_id, None)
        self._offer.pop(job_id, None)

    def _flush_waits(self) -> None:
        """Write the waits whose state, reason, code or plugin differ from what the job records, in one
        transaction, and keep what was written."""
        waits, self._waits = self._waits, []
        changed = {}
        for wait in waits:
            job = self._jobs.get(wait.job_id)
            if job is None or _records(job, wait):
                continue
            changed[wait.job_id] = wait  # the last word of the round on a job counts
        if not changed:
            return
        record_waits(self.store.sessions, self.clock, list(changed.values()),
                     {job_id: self._jobs[job_id].state for job_id in changed})
        for job_id, wait in changed.items():
            job = self._jobs[job_id]
            self._jobs[job_id] = replace(job, state=state_after(job.state, wait.deferred), reason=wait.reason,
                                         wait_code=wait.code, wait_plugin=wait.plugin or None)


def _records(job: QueuedJob, wait: WaitRecord) -> bool:
    """Whether the job already records this wait."""
    return (job.state, job.reason, job.wait_code, job.wait_plugin) == (
        state_after(job.state, wait.deferred), wait.reason, wait.code, wait.plugin or None)
