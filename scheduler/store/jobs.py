"""The job store: submission, the one place state transitions happen, runs, energy and history.

Every change goes through ``JobStore``; the REST API, the scheduling tick and the controller's events all
call it, so the rules (allowed transitions, a recorded reason for each) live here once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy import Select, delete, event, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from scheduler.clock import Clock, from_unix_s
from scheduler.store.models import Job, JobEvent, Node, PowerSample, Run, RunEnergy
from scheduler.store.finished_runs import RECENT_RUNS, FinishedRun
from scheduler.store.group_commit import GroupCommit
from scheduler.store.new_jobs import NewJob, insert_new_jobs
from scheduler.errors import InvalidRequest, InvalidTransition, JobNotFound, KeyReused
from scheduler.store.job_state import JobState, RunStatus
from scheduler.store.launch import DEFAULT_LAUNCH, Launch, check_launch
from scheduler.store.inventory import largest_node_memory_bytes
from scheduler.store.paths import PathRoots
from scheduler.store.resources import check_resources
from scheduler.store.storable import check_storable
from policies.snapshot import FULL_POWER, CapStep
from workers.errors import SpecError
from workers.events import CapMode, PowerCap
from workers.kinds import KindRegistry, ReferencedJob, builtin_kinds
from workers.kinds.spec_paths import is_within

log = logging.getLogger(__name__)

MAX_GPUS_PER_JOB = 64
MAX_ZONE_NAME = 64
MAX_ZONES = 64
CANCELLED_BY_USER = "cancelled by the user"
#: A running job asked to stop carries this before the reason it will end with, until it has stopped.
STOPPING = "stopping: "
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")  # what a job id may look like (ours: 12 hex digits)
MAX_TIME_LIMIT_S = 366 * 86400.0  # a year: anything longer is a typo
MAX_PRIORITY = 1000  # priorities range over [-MAX_PRIORITY, MAX_PRIORITY]; higher starts first
MAX_DEPENDENCIES = 100
MAX_IDEMPOTENCY_KEY = 200
MAX_AHEAD_S = 366 * 86400.0  # a deadline or begin time more than a year ahead is a typo
HELD_REASON = "held by the user"
#: How many times a failed run of an interruptible job (a rank that crashed, a node's process killed) queues the
#: job again to resume from its checkpoint, before the next failure fails it: a gang stops whole when one rank
#: fails, and its checkpoint is the place to go on from; a script that fails every time still ends.
REQUEUES_AFTER_FAILURE = 2
#: How the message of a run that was never launched begins (abort_run: a worker refused it, the controller was
#: away): its job did not fail, so such a run does not count toward REQUEUES_AFTER_FAILURE.
NOT_LAUNCHED = "not launched: "
#: How long the largest node's memory, asked for each submission's memory check, is taken as known (s).
NODE_MEMORY_TTL_S = 5.0
NODES_CHANGED = "wattsched.nodes_changed"  # a session's flag: it wrote a node, and memory figures may have changed


def cap_in_force(power_cap_mode: str | None) -> bool:
    """Whether a run's power cap changed what it drew, so that a saving may be credited to it: ``applied`` or
    ``simulated``; not a dry run (the GPU kept its default limit), nor a mode never reported."""
    return power_cap_mode is not None and CapMode(power_cap_mode).in_force


@dataclass(frozen=True)
class CounterfactualPlacement:
    """A run's zone and start (Unix s), its job's home zone (None: not given) and fifo's start for the run, and
    the cap step it was given (``cap_speed`` x full speed at ``cap_power_fraction`` x full power; 1 and 1 at full
    power) with how its worker applied the cap (a ``workers.events.CapMode`` value; None: no cap or not known).

    ``speed`` and ``power_fraction`` are the step the counterfactual credits: the cap step when the cap was in
    force, else full power (a dry-run cap changed nothing, so there is nothing to undo).
    """

    zone: str
    started_s: float
    home_zone: str | None
    counterfactual_start_s: float
    cap_speed: float = 1.0
    cap_power_fraction: float = 1.0
    power_cap_mode: str | None = None

    @property
    def speed(self) -> float:
        return self.cap_speed if cap_in_force(self.power_cap_mode) else 1.0

    @property
    def power_fraction(self) -> float:
        return self.cap_power_fraction if cap_in_force(self.power_cap_mode) else 1.0


@dataclass(frozen=True)
class OpenRun:
    """A job running now with what the scheduler needs to weigh suspending it: its request and latest progress,
    the cap power fraction of its open run, and the seconds its runs have run (the open one until now) and how
    many runs that is (for ``WorkEstimator.duration_s``)."""

    job_id: str
    kind: str
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    gpus: int
    interruptible: bool
    deadline_at: datetime | None
    cap_power_fraction: float
    run_s: float
    runs: int


@dataclass(frozen=True)
class Submission:
    """A validated request to run a job."""

    kind: str
    spec: dict[str, Any]
    gpus: int = 1
    deadline: datetime | None = None
    zones: tuple[str, ...] = ()
    interruptible: bool = False
    not_before: datetime | None = None
    time_limit_s: float | None = None
    priority: int = 0
    hold: bool = False
    depends_on: tuple[str, ...] = ()
    idempotency_key: str | None = None
    launch: Launch = DEFAULT_LAUNCH

    def request_hash(self) -> str:
        """SHA-256 of what was asked (the key aside): the same key with another request is a conflict."""
        body = {"kind": self.kind, "spec": self.spec, "gpus": self.gpus, "zones": list(self.zones),
                "deadline": self.deadline.isoformat() if self.deadline else None,
                "interruptible": self.interruptible,
                "not_before": self.not_before.isoformat() if self.not_before else None,
                "time_limit_s": self.time_limit_s, "priority": self.priority, "hold": self.hold,
                "depends_on": list(self.depends_on)}
        if self.launch != DEFAULT_LAUNCH:  # only when asked: requests stored before launch options hash the same
            body["launch"] = self.launch.to_dict()
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def transition(session: Session, job: Job, target: JobState, reason: str, at: datetime) -> None:
    """Move ``job`` to ``target``, recording the change and its reason; the only writer of ``Job.state``."""
    current = JobState(job.state)
    if current == target:
        if job.reason != reason:
            job.reason = reason
        return
    if not current.can_go_to(target):
        raise InvalidTransition(f"job {job.id} cannot go from {current.value} to {target.value}")
    job.state = target.value
    job.reason = reason
    if not target.waiting:
        job.wait_code = job.wait_plugin = None  # a wait's status says nothing once the job has left the queue
    if target == JobState.RUNNING and job.started_at is None:
        job.started_at = at
    if target.terminal:
        job.finished_at = at
    session.add(JobEvent(job_id=job.id, at=at, from_state=current.value, to_state=target.value, reason=reason))


class JobStore:
    """Jobs in the database, seen and changed through the lifecycle rules."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, jobs_dir: Path,
                 kinds: KindRegistry | None = None):
        self.sessions = sessions
        self.clock = clock
        self.jobs_dir = jobs_dir
        #: The job kinds submissions are checked against (the built-in kinds unless given).
        self.kinds = kinds if kinds is not None else builtin_kinds()
        #: Submissions arriving together are inserted in one transaction (scheduler.store.new_jobs).
        self.submit_batches: GroupCommit[NewJob, bool] = GroupCommit(self._insert_batch)
        self._node_memory: tuple[float, int | None] | None = None  # (when asked, monotonic s; bytes)
        self._node_generation = 0  # one more at each commit that recorded a node
        event.listen(sessions, "after_flush", _note_node_changes)
        event.listen(sessions, "after_commit", self._forget_node_memory)

    # --- submission and queries -------------------------------------------------------------------------

    def validate(self, kind: Any, spec: Any, gpus: Any = 1, deadline: Any = None, zones: Any = None,
                 interruptible: Any = False, *, not_before: Any = None, time_limit_s: Any = None,
                 priority: Any = 0, hold: Any = False, depends_on: Any = None, idempotency_key: Any = None,
                 gpus_per_node: Any = None, launch: Any = None, stop_signal: Any = None, grace_s: Any = None,
                 memory_limit_gib: Any = None,
                 owner: int | None = None, paths: PathRoots | None = None) -> Submission:
        """Check a submission; a problem raises InvalidRequest naming the field and what is accepted.

        ``owner``: the submitting user's id when they may only refer to their own jobs (``depends_on``, a spec's
        ``job:<id>`` or a path into a job's directory), None for an admin (any job); another user's job is
        refused exactly as a job that does not exist. ``paths``: where the spec's paths may point (None: not
        checked, for callers inside the daemon); they are stored resolved.
        """
        try:
            job_kind = self.kinds.get(kind)
            if not isinstance(spec, dict):
                raise InvalidRequest("spec: must be a JSON object", "spec")
            check_storable(spec, "spec")
            normalised = job_kind.resolve(job_kind.validate(spec), lambda job_id: self._find_job(job_id, owner))
        except SpecError as exc:
            raise InvalidRequest(str(exc), exc.field) from None
        if paths is not None:
            for key, path in job_kind.paths(normalised).items():
                normalised = {**normalised, key: paths.check(
                    f"spec.{key}", path, admin=owner is None, owns_job=lambda job_id: self._owns(job_id, owner))}
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS_PER_JOB:
            raise InvalidRequest(f"gpus: must be an integer from 1 to {MAX_GPUS_PER_JOB}, got {gpus!r}", "gpus")
        zone_list: tuple[str, ...] = ()
        if zones is not None:
            if not isinstance(zones, (list, tuple)) or len(zones) > MAX_ZONES or not all(
                isinstance(z, str) and 0 < len(z) <= MAX_ZONE_NAME and z.isprintable() for z in zones
            ):
                raise InvalidRequest("zones: must be a list of zone names such as [\"DE\", \"FR\"]", "zones")
            zone_list = tuple(dict.fromkeys(zones))
        now = self.clock()
        if deadline is not None:
            if not isinstance(deadline, datetime) or deadline.tzinfo is None:
                raise InvalidRequest("deadline: must be an ISO 8601 time with a timezone", "deadline")
            if deadline <= now:
                raise InvalidRequest(f"deadline: {deadline.isoformat()} is in the past", "deadline")
            if (deadline - now).total_seconds() > MAX_AHEAD_S:
                raise InvalidRequest("deadline: must be within a year from now", "deadline")
        if not isinstance(interruptible, bool):
            raise InvalidRequest("interruptible: must be true or false", "interruptible")
        if interruptible and not job_kind.interruptible:
            # only a kind that checkpoints can be suspended and resumed without losing work
            can = ", ".join(k.name for k in self.kinds if k.interruptible)
            raise InvalidRequest(f"interruptible: {kind} jobs cannot be suspended and resumed; kinds that can: {can}",
                                 "interruptible")
        if not_before is not None:
            if not isinstance(not_before, datetime) or not_before.tzinfo is None:
                raise InvalidRequest("not_before: must be an ISO 8601 time with a timezone", "not_before")
            if (not_before - now).total_seconds() > MAX_AHEAD_S:
                raise InvalidRequest("not_before: must be within a year from now", "not_before")
            if deadline is not None and not_before >= deadline:
                raise InvalidRequest("not_before: must be before the deadline", "not_before")
        if time_limit_s is not None:
            if isinstance(time_limit_s, bool) or not isinstance(time_limit_s, (int, float)) or not (
                    math.isfinite(time_limit_s) and 0 < time_limit_s <= MAX_TIME_LIMIT_S):
                raise InvalidRequest(f"time_limit_s: must be a number of seconds from 1 to {MAX_TIME_LIMIT_S:.0f}, "
                                     f"got {time_limit_s!r}"[:200], "time_limit_s")
            time_limit_s = float(time_limit_s)
        if isinstance(priority, bool) or not isinstance(priority, int) or not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidRequest(f"priority: must be an integer from {-MAX_PRIORITY} to {MAX_PRIORITY}, "
                                 f"got {priority!r}"[:200], "priority")
        if not isinstance(hold, bool):
            raise InvalidRequest("hold: must be true or false", "hold")
        dependencies = self._check_dependencies(depends_on, owner)
        if idempotency_key is not None and not (
                isinstance(idempotency_key, str) and 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY
                and idempotency_key.isascii() and idempotency_key.isprintable()):
            raise InvalidRequest(f"idempotency_key: must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters",
                                 "idempotency_key")
        launch_options = check_launch(gpus, gpus_per_node, launch, stop_signal, grace_s, memory_limit_gib)
        try:
            check_resources(job_kind, normalised, gpus, launch_options, lambda: self._largest_node_bytes(fresh=False))
        except InvalidRequest:  # refused on the database's figures, never on a remembered one
            check_resources(job_kind, normalised, gpus, launch_options, lambda: self._largest_node_bytes(fresh=True))
        return Submission(kind, normalised, gpus, deadline, zone_list, interruptible, not_before, time_limit_s,
                          priority, hold, dependencies, idempotency_key, launch_options)

    def _largest_node_bytes(self, fresh: bool) -> int | None:
        """The largest live node's memory (None: no node has said), for the memory check of a submission: asked
        of the database at most every NODE_MEMORY_TTL_S unless ``fresh`` (a query for each submission was a
        third of the submit path's time) or a node was recorded through this store's sessions since."""
        now_s = time.monotonic()
        remembered, generation = self._node_memory, self._node_generation
        if not fresh and remembered is not None and now_s - remembered[0] < NODE_MEMORY_TTL_S:
            return remembered[1]
        found = largest_node_memory_bytes(self.sessions)
        if generation == self._node_generation:  # no node recorded while asking: the answer is current
            self._node_memory = (now_s, found)
        return found

    def _forget_node_memory(self, session: Session) -> None:
        """After a commit that recorded a node (a worker's report of its memory), ask again next time."""
        if session.info.pop(NODES_CHANGED, False):
            self._node_generation += 1
            self._node_memory = None

    def _check_dependencies(self, depends_on: Any, owner: int | None) -> tuple[str, ...]:
        """Job ids this job waits for: each must exist and be visible to the submitter."""
        if depends_on is None:
            return ()
        if not isinstance(depends_on, (list, tuple)) or len(depends_on) > MAX_DEPENDENCIES or not all(
                isinstance(j, str) and JOB_ID_PATTERN.fullmatch(j) for j in depends_on):
            raise InvalidRequest(f"depends_on: must be a list of at most {MAX_DEPENDENCIES} job ids", "depends_on")
        ids = tuple(dict.fromkeys(depends_on))
        if ids:
            with self.sessions() as session:
                query = select(Job.id).where(Job.id.in_(ids))
                if owner is not None:
                    query = query.where(Job.user_id == owner)
                found = set(session.scalars(query).all())
            missing = [j for j in ids if j not in found]
            if missing:
                raise InvalidRequest(f"depends_on: no job with id {missing[0]!r}", "depends_on")
        return ids

    def _find_job(self, job_id: str, owner: int | None = None) -> ReferencedJob | None:
        """A job a spec refers to (``job:<id>``), for its kind to resolve the reference; None if there is none,
        or (with ``owner``) if it is another user's."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return None
        with self.sessions() as session:
            job = session.get(Job, job_id)
            if job is None or (owner is not None and job.user_id != owner):
                return None
            return ReferencedJob(job.id, job.kind, dict(job.spec or {}), job.workdir)

    def _owns(self, job_id: str, owner: int | None) -> bool:
        """Whether ``job_id`` names a job, and (with ``owner``) that user's."""
        return JOB_ID_PATTERN.fullmatch(job_id) is not None and self._find_job(job_id, owner) is not None

    def submit(self, submission: Submission, user_id: int | None = None) -> Job:
        return self.submit_once(submission, user_id)[0]

    def submit_once(self, submission: Submission, user_id: int | None = None) -> tuple[Job, bool]:
        """Queue a job, or find the one this user's ``idempotency_key`` already created.

        Returns the job and whether it was created now, once it is committed. The same key with a different
        request raises KeyReused. Submissions made at the same time share a transaction (``GroupCommit``); one
        the database refuses fails alone.
        """
        key = submission.idempotency_key
        digest = submission.request_hash() if key else None
        now = self.clock()
        job_id = uuid.uuid4().hex[:12]
        held = submission.hold
        new = NewJob(dict(
            id=job_id, user_id=user_id, kind=submission.kind, spec=submission.spec, gpus=submission.gpus,
            zones=list(submission.zones), deadline_at=submission.deadline, interruptible=submission.interruptible,
            priority=submission.priority, state=JobState.PENDING.value, reason=HELD_REASON if held else "queued",
            cancel_requested=False, submitted_at=now, workdir=str(self.jobs_dir / job_id),
            not_before_at=submission.not_before, time_limit_s=submission.time_limit_s, held=held,
            depends_on=list(submission.depends_on), idempotency_key=key, request_hash=digest,
            **submission.launch.to_dict(),
        ))
        if not self.submit_batches(new):
            # This user's key made a job already (a retry, or the same key racing in from another request).
            found = self._by_key(user_id, key, digest) if key and user_id is not None else None
            if found is None:
                raise RuntimeError(f"job {job_id} was not inserted, and no job has its idempotency key")
            return found, False
        # A new job has no runs and one event: build it rather than read it back.
        job = Job(**new.values)
        job.runs = []
        job.events = [JobEvent(**new.event)]
        return job, True

    def _insert_batch(self, batch: list[NewJob]) -> list[bool | BaseException]:
        return insert_new_jobs(self.sessions.kw["bind"], batch)

    def _by_key(self, user_id: int, key: str, digest: str | None) -> Job | None:
        with self.sessions() as session:
            row = session.execute(select(Job.id, Job.request_hash).where(
                Job.user_id == user_id, Job.idempotency_key == key)).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise KeyReused(key, row.id)
        return self.get(row.id)

    def get(self, job_id: str, owner: int | None = None) -> Job:
        """The job with its runs, energy, events and user; ``owner``: only if that user's (else JobNotFound)."""
        with self.sessions() as session:
            query = select(Job).where(Job.id == job_id)
            if owner is not None:
                query = query.where(Job.user_id == owner)
            job = session.scalars(
                query.options(selectinload(Job.runs).selectinload(Run.energy), selectinload(Job.events),
                              selectinload(Job.user))
            ).one_or_none()
            if job is None:
                raise JobNotFound(job_id)
            return job

    def check_owner(self, job_id: str, owner: int | None) -> None:
        """JobNotFound unless the job exists and (with ``owner``) belongs to that user: ids of others' jobs
        must not be confirmed to exist."""
        with self.sessions() as session:
            query = select(Job.id).where(Job.id == job_id)
            if owner is not None:
                query = query.where(Job.user_id == owner)
            if session.scalar(query) is None:
                raise JobNotFound(job_id)

    def owned(self, job_ids: Sequence[str], owner: int) -> list[str]:
        """Those of ``job_ids`` that belong to user ``owner``."""
        with self.sessions() as session:
            return list(session.scalars(select(Job.id).where(Job.id.in_(list(job_ids)), Job.user_id == owner)))

    def list(self, state: str | None = None, kind: str | None = None, limit: int = 100,
             offset: int = 0, *, owner: int | None = None, user: str | None = None, zone: str | None = None,
             since: datetime | None = None, until: datetime | None = None) -> tuple[list[Job], int]:
        """Jobs newest first, with the total count matching the filters.

        owner: only this user id's jobs; user: only this user name's; zone: jobs that ran (a run) in it;
        since/until: submitted in [since, until).
        """
        query = self._filtered(select(Job), state=state, kind=kind, owner=owner, user=user, zone=zone)
        if since:
            query = query.where(Job.submitted_at >= since)
        if until:
            query = query.where(Job.submitted_at < until)
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            jobs = session.scalars(
                query.order_by(Job.submitted_at.desc(), Job.id).limit(limit).offset(offset)
                .options(selectinload(Job.runs).selectinload(Run.energy), selectinload(Job.user))
            ).all()
            return list(jobs), int(total or 0)

    @staticmethod
    def _filtered(query, *, state: str | None = None, kind: str | None = None, owner: int | None = None,
                  user: str | None = None, zone: str | None = None):
        if state is not None and state not in {s.value for s in JobState}:
            raise InvalidRequest(
                f"state: must be one of {', '.join(s.value for s in JobState)}, got {state!r}"[:300], "state")
        if state:
            query = query.where(Job.state == state)
        if kind:
            query = query.where(Job.kind == kind)
        if owner is not None:
            query = query.where(Job.user_id == owner)
        if user:
            from scheduler.store.models import User

            query = query.where(Job.user_id.in_(select(User.id).where(User.name == user)))
        if zone:
            query = query.where(Job.id.in_(select(Run.job_id).where(Run.zone == zone)))
        return query

    def waiting(self) -> list[Job]:
        """Jobs a policy may start, in arrival order. Jobs held by their user are left out.

        Each row carries what the policy must honour besides: ``not_before_at`` (do not start before),
        ``depends_on`` (job ids that must have succeeded; see ``unmet_dependencies``), ``time_limit_s``,
        ``priority``.
        """
        with self.sessions() as session:
            return list(session.scalars(
                select(Job).where(Job.state.in_([s.value for s in (JobState.PENDING, JobState.DEFERRED,
                                                                   JobState.SUSPENDED)]),
                                  Job.cancel_requested.is_(False), Job.held.is_(False))
                .order_by(Job.submitted_at, Job.id)
            ).all())

    def unmet_dependencies(self, jobs: Sequence[Job]) -> dict[str, list[tuple[str, str]]]:
        """For each job with dependencies: the (job id, state) of those that have not succeeded yet.

        A dependency that failed or was cancelled can never be met (Slurm's DependencyNeverSatisfied).
        """
        wanted = {d for j in jobs for d in (j.depends_on or ())}
        if not wanted:
            return {}
        with self.sessions() as session:
            states = dict(session.execute(select(Job.id, Job.state).where(Job.id.in_(wanted))).all())
        unmet = {}
        for job in jobs:
            pending = [(d, states.get(d, "unknown")) for d in job.depends_on or ()
                       if states.get(d) != JobState.SUCCEEDED.value]
            if pending:
                unmet[job.id] = pending
        return unmet

    def recent_finished_runs(self, limit: int = RECENT_RUNS) -> list[FinishedRun]:
        """The latest succeeded runs with their energy, newest first, which duration and power estimates learn
        from."""
        return self._finished_runs(lambda query: query.order_by(Run.ended_at.desc()).limit(limit))

    def finished_run(self, run_id: int) -> FinishedRun | None:
        """A run as estimates learn from it; None unless it succeeded and its energy is recorded."""
        found = self._finished_runs(lambda query: query.where(Run.id == run_id))
        return found[0] if found else None

    def _finished_runs(self, narrow: Callable[[Select], Select]) -> list[FinishedRun]:
        """Succeeded runs with their energy, as ``narrow`` orders and limits them."""
        with self.sessions() as session:
            rows = session.execute(narrow(
                select(Job.kind, Job.spec, Job.result, Job.gpus, RunEnergy.duration_s, RunEnergy.gpu_energy_j)
                .join(Run, Run.job_id == Job.id).join(RunEnergy, RunEnergy.run_id == Run.id)
                .where(Run.status == RunStatus.SUCCEEDED.value)
            )).all()
        return [FinishedRun(kind, spec, result, duration_s, gpu_j, gpus)
                for kind, spec, result, gpus, duration_s, gpu_j in rows]

    def run_seconds(self, job_ids: Sequence[str]) -> dict[str, tuple[float, int]]:
        """For each job: seconds its finished runs ran, and how many runs that was."""
        if not job_ids:
            return {}
        with self.sessions() as session:
            rows = session.execute(select(Run.job_id, Run.started_at, Run.ended_at)
                                   .where(Run.job_id.in_(job_ids), Run.ended_at.is_not(None))).all()
        seconds: dict[str, tuple[float, int]] = {}
        for job_id, started_at, ended_at in rows:
            total, count = seconds.get(job_id, (0.0, 0))
            seconds[job_id] = (total + (ended_at - started_at).total_seconds(), count + 1)
        return seconds

    def run_is_open(self, run_id: int) -> bool:
        with self.sessions() as session:
            return session.scalar(select(Run.status).where(Run.id == run_id)) == RunStatus.RUNNING.value

    def running_runs(self) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value)).all())

    def running_jobs(self, now: datetime) -> list[OpenRun]:
        """The jobs with an open run, in one query, with their open run's cap and their runs' seconds until
        ``now``."""
        open_jobs = select(Run.job_id).where(Run.status == RunStatus.RUNNING.value)
        with self.sessions() as session:
            rows = session.execute(
                select(Job.id, Job.kind, Job.spec, Job.progress, Job.gpus, Job.interruptible, Job.deadline_at,
                       Run.status, Run.started_at, Run.ended_at, Run.cap_power_fraction)
                .join(Run, Run.job_id == Job.id).where(Job.id.in_(open_jobs)).order_by(Job.id, Run.attempt)
            ).all()
        runs: dict[str, list] = {}
        for row in rows:
            runs.setdefault(row.id, []).append(row)
        found = []
        for job_id, job_runs in runs.items():
            current = next(r for r in reversed(job_runs) if r.status == RunStatus.RUNNING.value)
            run_s = sum(max(((r.ended_at or now) - r.started_at).total_seconds(), 0.0) for r in job_runs)
            found.append(OpenRun(job_id, current.kind, current.spec, current.progress, current.gpus,
                                 current.interruptible, current.deadline_at, current.cap_power_fraction, run_s,
                                 len(job_runs)))
        return found

    def request_suspend(self, job_id: str, why: str) -> bool:
        """Record that a running job is being stopped at a checkpoint, and ``why``: the reason it will wait with
        once its run has ended ``suspended``. False when it no longer runs or its user is cancelling it."""
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.RUNNING.value or job.cancel_requested:
                return False
            job.reason = STOPPING + why
            return True

    def count_by_state(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            return {state: int(n) for state, n in rows}

    # --- changes --------------------------------------------------------------------------------------

    def request_cancel(self, job_id: str, owner: int | None = None,
                       why: str = CANCELLED_BY_USER) -> tuple[Job, bool]:
        """Cancel a job. Returns the job and whether a running job must be stopped by the controller.

        owner: only if the job is this user id's (else JobNotFound). why: the reason the job ends with."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = _owned_job(session, job_id, owner)
            state = JobState(job.state)
            if state.terminal:
                raise InvalidTransition(f"job {job_id} is already {state.value}")
            must_stop = state == JobState.RUNNING
            if must_stop:
                job.cancel_requested = True
                job.reason = STOPPING + why
            else:
                transition(session, job, JobState.CANCELLED, why, now)
        return self.get(job_id), must_stop

    def delete(self, job_id: str, owner: int | None = None) -> bool:
        """Remove a job that has ended, with its events, runs, energy and power samples, then its directory (only
        the one it has in the jobs directory). Returns whether that directory is gone (False: it could not be
        removed, or lies elsewhere; the log says why).

        owner: only if the job is this user id's (else JobNotFound). InvalidTransition while the job has not
        ended, or while a job that has not ended needs it (depends on it, or reads a path in its directory).
        """
        with self.sessions.begin() as session:
            job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one_or_none()
            if job is None or (owner is not None and job.user_id != owner):
                raise JobNotFound(job_id)
            state = JobState(job.state)
            if not state.terminal:
                raise InvalidTransition(f"job {job_id} is {state.value}; cancel it, and delete it once it has ended")
            workdir = job.workdir
            if self._needed(session, job_id, workdir):
                # which job needs it is not said: it may be another user's
                raise InvalidTransition(f"job {job_id} is needed by a job that has not ended (it depends on it or "
                                        "reads from its directory); delete it once that job has ended")
            runs = select(Run.id).where(Run.job_id == job_id)
            session.execute(delete(PowerSample).where(PowerSample.run_id.in_(runs)))
            session.execute(delete(RunEnergy).where(RunEnergy.run_id.in_(runs)))
            session.execute(delete(Run).where(Run.job_id == job_id))
            session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            session.execute(delete(Job).where(Job.id == job_id))
        return self._remove_workdir(job_id, workdir)

    @staticmethod
    def _needed(session: Session, job_id: str, workdir: str) -> bool:
        """Whether a job that has not ended depends on ``job_id`` or names a path in its directory."""
        folders = {os.path.realpath(workdir), os.path.normpath(workdir)} if workdir else set()
        ended = [s.value for s in JobState if s.terminal]
        for depends_on, spec in session.execute(select(Job.depends_on, Job.spec).where(Job.state.not_in(ended))):
            if job_id in (depends_on or ()):
                return True
            if any(isinstance(v, str) and is_within(v, f) for v in (spec or {}).values() for f in folders):
                return True
        return False

    def _remove_workdir(self, job_id: str, workdir: str) -> bool:
        """Remove the job's directory if it is ``jobs_dir/<job_id>`` itself (not a link to one elsewhere)."""
        own = os.path.join(os.path.realpath(self.jobs_dir), job_id)
        if not workdir or os.path.islink(workdir) or os.path.realpath(workdir) != own:
            log.warning("job %s deleted; its directory %r is not %s, so it was left in place", job_id, workdir, own)
            return False
        try:
            shutil.rmtree(own)
        except FileNotFoundError:
            pass  # it never ran
        except OSError as exc:
            log.warning("job %s deleted; its directory %s could not be removed: %s", job_id, own, exc)
            return False
        return True

    def hold(self, job_id: str, owner: int | None = None) -> Job:
        """Keep a waiting job from starting until it is released (Slurm's ``scontrol hold``)."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = _owned_job(session, job_id, owner)
            state = JobState(job.state)
            if not state.waiting or job.cancel_requested:
                raise InvalidTransition(f"job {job_id} is {state.value}; only a waiting job can be held")
            job.held = True
            # A deferred job is no longer deferred by the policy: the user holds it.
            target = JobState.SUSPENDED if state == JobState.SUSPENDED else JobState.PENDING
            transition(session, job, target, HELD_REASON, now)
        return self.get(job_id)

    def release(self, job_id: str, owner: int | None = None) -> Job:
        """Let a held job be scheduled again."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = _owned_job(session, job_id, owner)
            if not job.held:
                raise InvalidTransition(f"job {job_id} is not held")
            job.held = False
            if JobState(job.state).waiting:
                transition(session, job, JobState(job.state), "released by the user; queued", now)
        return self.get(job_id)

    def set_waiting(self, job_id: str, reason: str, deferred: bool, code: str | None = None,
                    plugin: str | None = None) -> None:
        """Record why a waiting job waits (and whether it is held back on purpose); ``code`` and ``plugin``: the
        policy's status code (``policies.status.Code``) and the plugin that said it, when a policy decided."""
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or not JobState(job.state).waiting:
                return
            target = JobState.DEFERRED if deferred else JobState.PENDING
            if JobState(job.state) == JobState.SUSPENDED:
                target = JobState.SUSPENDED  # it keeps its checkpoint state until it runs again
            transition(session, job, target, reason, self.clock())
            if (job.wait_code, job.wait_plugin) != (code, plugin or None):
                job.wait_code, job.wait_plugin = code, plugin or None

    def start_run(self, job_id: str, node_id: str, zone: str, gpu_ids: Sequence[str],
                  power_cap_w: float | None, reason: str, cap_step: CapStep = FULL_POWER) -> Run:
        """Mark a job running and open a new run for it; ``cap_step``: how the job runs at that cap."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            attempt = 1 + (session.scalar(select(func.max(Run.attempt)).where(Run.job_id == job_id)) or 0)
            run = Run(job_id=job_id, attempt=attempt, node_id=node_id, zone=zone, gpu_ids=list(gpu_ids),
                      power_cap_w=power_cap_w, cap_speed=cap_step.speed, cap_power_fraction=cap_step.power_fraction,
                      started_at=now, status=RunStatus.RUNNING.value)
            session.add(run)
            transition(session, job, JobState.RUNNING, reason, now)
            session.flush()
            return run

    def abort_run(self, run_id: int, message: str) -> None:
        """A run that could not be launched: close it (failed, its message beginning NOT_LAUNCHED: no failure of
        its job) and queue the job again."""
        now = self.clock()
        with self.sessions.begin() as session:
            run = session.get(Run, run_id)
            run.status, run.ended_at, run.message = RunStatus.FAILED.value, now, f"{NOT_LAUNCHED}{message}"
            transition(session, run.job, JobState.PENDING, f"could not start: {message}; queued again", now)

    def add_progress(self, run_id: int, progress: dict | None, samples: Sequence[Sequence[float]]) -> None:
        """Store the job's latest progress and power samples of one of its runs."""
        with self.sessions.begin() as session:
            if progress:
                run = session.get(Run, run_id)
                run.job.progress = progress
            self._add_samples(session, run_id, samples)

    def add_samples(self, run_id: int, samples: Sequence[Sequence[float]]) -> None:
        with self.sessions.begin() as session:
            self._add_samples(session, run_id, samples)

    @staticmethod
    def _add_samples(session: Session, run_id: int, samples: Sequence[Sequence[float]]) -> None:
        """Power samples are ``[timestamp_s, gpu_power_w, cpu_power_w, gpu_energy_j, cpu_energy_j]``."""
        session.add_all(
            PowerSample(run_id=run_id, at=from_unix_s(t), gpu_power_w=gp, cpu_power_w=cp,
                        gpu_energy_j=ge, cpu_energy_j=ce)
            for t, gp, cp, ge, ce in samples
        )

    def stored_samples(self, run_id: int) -> list[PowerSample]:
        with self.sessions() as session:
            return list(session.scalars(select(PowerSample).where(PowerSample.run_id == run_id)
                                        .order_by(PowerSample.at)).all())

    def finish_run(self, run_id: int, status: RunStatus, exit_code: int | None, message: str | None,
                   energy: RunEnergy | None, result: dict | None, *, power_cap: PowerCap | None = None,
                   ended_at: datetime | None = None) -> Job:
        """Close a run with its energy and how its power cap was applied (None: no cap asked, or not known), and
        move the job to where the run's end takes it.

        ended_at: when the run ended (None: now), which may be well before the daemon learns of it (it was down,
        or the database was away); kept between the run's start and now, whatever the worker's clock says.
        """
        now = self.clock()
        with self.sessions.begin() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != RunStatus.RUNNING.value:
                return run.job if run else None  # already recorded (events can be delivered twice)
            job = run.job
            ended = now if ended_at is None else min(max(ended_at, run.started_at), now)
            run.status, run.ended_at, run.exit_code, run.message = status.value, ended, exit_code, message
            if power_cap is not None:
                run.power_cap_mode, run.power_cap_limit_w = power_cap.mode.value, power_cap.limit_w
            if energy is not None:
                energy.run_id = run_id
                session.add(energy)
            run.nodes = _gang_nodes(result)
            if status == RunStatus.SUCCEEDED:
                job.result = result
                transition(session, job, JobState.SUCCEEDED, "finished", ended)
            elif status in (RunStatus.CANCELLED, RunStatus.SUSPENDED, RunStatus.LOST) and job.cancel_requested:
                why = job.reason[len(STOPPING):] if job.reason.startswith(STOPPING) else CANCELLED_BY_USER
                transition(session, job, JobState.CANCELLED, why, ended)
            elif status == RunStatus.SUSPENDED:
                # a suspension the scheduler asked for with a reason (request_suspend) keeps it
                why = job.reason[len(STOPPING):] if job.reason.startswith(STOPPING) else None
                transition(session, job, JobState.SUSPENDED, why or message or "suspended at a checkpoint", ended)
            elif status == RunStatus.LOST:  # queued again now, when the loss is noticed
                transition(session, job, JobState.PENDING, f"{_first_line(message)}; queued again", now)
            else:
                job.error = message
                # this one included; a start that was never launched is no failure of the job
                failures = sum(1 for r in job.runs if r.status == RunStatus.FAILED.value
                               and (r is run or not (r.message or "").startswith(NOT_LAUNCHED)))
                if job.interruptible and failures <= REQUEUES_AFTER_FAILURE:
                    transition(session, job, JobState.PENDING,
                               f"{_first_line(message)}; queued again to resume from its checkpoint (failure "
                               f"{failures} of {REQUEUES_AFTER_FAILURE + 1} allowed)", now)
                else:
                    transition(session, job, JobState.FAILED, f"failed: {_first_line(message)}", ended)
            return job

    def runs_with_basis(self, basis: str) -> list[tuple[RunEnergy, Run]]:
        """Finished runs whose emissions were computed on intensities of this basis."""
        with self.sessions() as session:
            return [tuple(row) for row in session.execute(
                select(RunEnergy, Run).join(Run, Run.id == RunEnergy.run_id).where(RunEnergy.carbon_basis == basis)
            ).all()]

    def update_emissions(self, energy_id: int, emissions, counterfactual_g: float | None) -> None:
        """Replace a run's emissions (e.g. once actual intensities replace the forecast it was charged at)."""
        with self.sessions.begin() as session:
            energy = session.get(RunEnergy, energy_id)
            energy.emissions_g, energy.intensity_g_per_kwh = emissions.emissions_g, emissions.intensity_g_per_kwh
            energy.carbon_source, energy.carbon_basis = emissions.source, emissions.basis
            energy.counterfactual_emissions_g = counterfactual_g

    def counterfactual_placement(self, run_id: int) -> CounterfactualPlacement:
        """Where and when a run ran, and where and when it would have run under fifo (see the daemon)."""
        with self.sessions() as session:
            run = session.get(Run, run_id)
            job = run.job
            # fifo runs the earlier runs back to back at full power: each lasts what it took x the speed its cap
            # really gave it (a run under a dry-run cap already ran at full speed)
            before_s = sum((r.ended_at - r.started_at).total_seconds()
                           * (r.cap_speed if cap_in_force(r.power_cap_mode) else 1.0)
                           for r in job.runs if r.attempt < run.attempt and r.ended_at is not None)
            return CounterfactualPlacement(
                zone=run.zone, started_s=run.started_at.timestamp(), home_zone=(job.zones or [None])[0],
                counterfactual_start_s=job.submitted_at.timestamp() + before_s, cap_speed=run.cap_speed,
                cap_power_fraction=run.cap_power_fraction, power_cap_mode=run.power_cap_mode)

    # --- history --------------------------------------------------------------------------------------

    def history(self, since: datetime | None = None, until: datetime | None = None,
                kind: str | None = None, *, state: str | None = None, owner: int | None = None,
                user: str | None = None, zone: str | None = None) -> list[Job]:
        """Finished or running jobs that started in [since, until), with their runs and energy.

        state, kind, user (name), owner (user id), zone (a run in it) narrow it like ``list``.
        """
        query = self._filtered(select(Job).where(Job.started_at.is_not(None)), state=state, kind=kind,
                               owner=owner, user=user, zone=zone)
        if since:
            query = query.where(Job.started_at >= since)
        if until:
            query = query.where(Job.started_at < until)
        with self.sessions() as session:
            return list(session.scalars(
                query.order_by(Job.started_at, Job.id).options(selectinload(Job.runs).selectinload(Run.energy),
                                                                selectinload(Job.user))
            ).all())


def _note_node_changes(session: Session, _flush_context) -> None:
    if any(isinstance(o, Node) for o in (*session.new, *session.dirty, *session.deleted)):
        session.info[NODES_CHANGED] = True


def _owned_job(session: Session, job_id: str, owner: int | None) -> Job:
    """The job, if it exists and (when ``owner`` is given) is that user's; another user's job is 'not found'."""
    job = session.get(Job, job_id)
    if job is None or (owner is not None and job.user_id != owner):
        raise JobNotFound(job_id)
    return job


def _gang_nodes(result: dict | None) -> list[Any] | None:
    """A gang's per-node breakdown from its run's result (the key scheduler.cluster.gang.NODES_KEY, which this
    layer cannot import), None for a run on one node."""
    nodes = result.get("nodes") if isinstance(result, dict) else None
    return nodes if isinstance(nodes, list) and nodes else None


def _first_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
