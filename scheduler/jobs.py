"""The job store: submission, the one place state transitions happen, runs, energy and history.

Every change goes through ``JobStore``; the REST API, the scheduling tick and the controller's events all
call it, so the rules (allowed transitions, a recorded reason for each) live here once.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from scheduler.clock import Clock, from_unix_s
from scheduler.db.models import Job, JobEvent, PowerSample, Run, RunEnergy
from scheduler.errors import InvalidRequest, InvalidTransition, JobNotFound
from scheduler.job_state import JobState, RunStatus
from workers.errors import SpecError
from workers.job_specs import KINDS, parse_spec

MAX_GPUS_PER_JOB = 64
MAX_ZONE_NAME = 64
JOB_REF_PREFIX = "job:"


@dataclass(frozen=True)
class Submission:
    """A validated request to run a job."""

    kind: str
    spec: dict[str, Any]
    gpus: int = 1
    deadline: datetime | None = None
    zones: tuple[str, ...] = ()
    interruptible: bool = False


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
    if target == JobState.RUNNING and job.started_at is None:
        job.started_at = at
    if target.terminal:
        job.finished_at = at
    session.add(JobEvent(job_id=job.id, at=at, from_state=current.value, to_state=target.value, reason=reason))


class JobStore:
    """Jobs in the database, seen and changed through the lifecycle rules."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, jobs_dir: Path):
        self.sessions = sessions
        self.clock = clock
        self.jobs_dir = jobs_dir

    # --- submission and queries -------------------------------------------------------------------------

    def validate(self, kind: Any, spec: Any, gpus: Any = 1, deadline: Any = None, zones: Any = None,
                 interruptible: Any = False) -> Submission:
        """Check a submission; a problem raises InvalidRequest naming the field and what is accepted."""
        if kind not in KINDS:
            raise InvalidRequest(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}", "kind")
        if not isinstance(spec, dict):
            raise InvalidRequest("spec: must be a JSON object", "spec")
        spec = self._resolve_job_refs(dict(spec))
        try:
            normalised = parse_spec(kind, spec).to_dict()
        except SpecError as exc:
            raise InvalidRequest(str(exc), exc.field) from None
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS_PER_JOB:
            raise InvalidRequest(f"gpus: must be an integer from 1 to {MAX_GPUS_PER_JOB}, got {gpus!r}", "gpus")
        zone_list: tuple[str, ...] = ()
        if zones is not None:
            if not isinstance(zones, (list, tuple)) or not all(
                isinstance(z, str) and 0 < len(z) <= MAX_ZONE_NAME for z in zones
            ):
                raise InvalidRequest("zones: must be a list of zone names such as [\"DE\", \"FR\"]", "zones")
            zone_list = tuple(dict.fromkeys(zones))
        if deadline is not None:
            if not isinstance(deadline, datetime) or deadline.tzinfo is None:
                raise InvalidRequest("deadline: must be an ISO 8601 time with a timezone", "deadline")
            if deadline <= self.clock():
                raise InvalidRequest(f"deadline: {deadline.isoformat()} is in the past", "deadline")
        if not isinstance(interruptible, bool):
            raise InvalidRequest("interruptible: must be true or false", "interruptible")
        return Submission(kind, normalised, gpus, deadline, zone_list, interruptible)

    def _resolve_job_refs(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``"checkpoint": "job:<id>"`` points a sampling job at a training job's working directory."""
        ref = spec.get("checkpoint")
        if isinstance(ref, str) and ref.startswith(JOB_REF_PREFIX):
            job_id = ref[len(JOB_REF_PREFIX):]
            with self.sessions() as session:
                job = session.get(Job, job_id)
                if job is None:
                    raise InvalidRequest(f"spec.checkpoint: no job with id {job_id!r}", "spec.checkpoint")
                spec["checkpoint"] = job.workdir
        return spec

    def submit(self, submission: Submission, user_id: int | None = None) -> Job:
        now = self.clock()
        job_id = uuid.uuid4().hex[:12]
        with self.sessions.begin() as session:
            job = Job(
                id=job_id, user_id=user_id, kind=submission.kind, spec=submission.spec, gpus=submission.gpus,
                zones=list(submission.zones), deadline_at=submission.deadline,
                interruptible=submission.interruptible, state=JobState.PENDING.value, reason="queued",
                submitted_at=now, workdir=str(self.jobs_dir / job_id),
            )
            session.add(job)
            session.add(JobEvent(job_id=job_id, at=now, from_state=None, to_state=JobState.PENDING.value,
                                 reason="submitted"))
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.scalars(
                select(Job).where(Job.id == job_id).options(
                    selectinload(Job.runs).selectinload(Run.energy), selectinload(Job.events))
            ).one_or_none()
            if job is None:
                raise JobNotFound(job_id)
            return job

    def list(self, state: str | None = None, kind: str | None = None, limit: int = 100,
             offset: int = 0) -> tuple[list[Job], int]:
        """Jobs newest first, with the total count matching the filters."""
        if state is not None and state not in {s.value for s in JobState}:
            raise InvalidRequest(
                f"state: must be one of {', '.join(s.value for s in JobState)}, got {state!r}", "state")
        query = select(Job)
        if state:
            query = query.where(Job.state == state)
        if kind:
            query = query.where(Job.kind == kind)
        with self.sessions() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery()))
            jobs = session.scalars(
                query.order_by(Job.submitted_at.desc(), Job.id).limit(limit).offset(offset)
                .options(selectinload(Job.runs).selectinload(Run.energy))
            ).all()
            return list(jobs), int(total or 0)

    def waiting(self) -> list[Job]:
        """Jobs a policy may start, in arrival order."""
        with self.sessions() as session:
            return list(session.scalars(
                select(Job).where(Job.state.in_([s.value for s in (JobState.PENDING, JobState.DEFERRED,
                                                                   JobState.SUSPENDED)]),
                                  Job.cancel_requested.is_(False))
                .order_by(Job.submitted_at, Job.id)
            ).all())

    def run_is_open(self, run_id: int) -> bool:
        with self.sessions() as session:
            return session.scalar(select(Run.status).where(Run.id == run_id)) == RunStatus.RUNNING.value

    def running_runs(self) -> list[Run]:
        with self.sessions() as session:
            return list(session.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value)).all())

    def count_by_state(self) -> dict[str, int]:
        with self.sessions() as session:
            rows = session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            return {state: int(n) for state, n in rows}

    # --- changes --------------------------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> tuple[Job, bool]:
        """Cancel a job. Returns the job and whether a running job must be stopped by the controller."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            state = JobState(job.state)
            if state.terminal:
                raise InvalidTransition(f"job {job_id} is already {state.value}")
            must_stop = state == JobState.RUNNING
            if must_stop:
                job.cancel_requested = True
                job.reason = "cancel requested; stopping the job"
            else:
                transition(session, job, JobState.CANCELLED, "cancelled by the user", now)
        return self.get(job_id), must_stop

    def set_waiting(self, job_id: str, reason: str, deferred: bool) -> None:
        """Record why a waiting job waits (and whether it is held back on purpose)."""
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None or not JobState(job.state).waiting:
                return
            target = JobState.DEFERRED if deferred else JobState.PENDING
            if JobState(job.state) == JobState.SUSPENDED and not deferred:
                target = JobState.SUSPENDED
            transition(session, job, target, reason, self.clock())

    def start_run(self, job_id: str, node_id: str, zone: str, gpu_ids: Sequence[str],
                  power_cap_w: float | None, reason: str) -> Run:
        """Mark a job running and open a new run for it."""
        now = self.clock()
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise JobNotFound(job_id)
            attempt = 1 + (session.scalar(select(func.max(Run.attempt)).where(Run.job_id == job_id)) or 0)
            run = Run(job_id=job_id, attempt=attempt, node_id=node_id, zone=zone, gpu_ids=list(gpu_ids),
                      power_cap_w=power_cap_w, started_at=now, status=RunStatus.RUNNING.value)
            session.add(run)
            transition(session, job, JobState.RUNNING, reason, now)
            session.flush()
            return run

    def abort_run(self, run_id: int, message: str) -> None:
        """A run that could not be launched: close it and queue the job again."""
        now = self.clock()
        with self.sessions.begin() as session:
            run = session.get(Run, run_id)
            run.status, run.ended_at, run.message = RunStatus.FAILED.value, now, message
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
                   energy: RunEnergy | None, result: dict | None) -> Job:
        """Close a run with its energy, and move the job to where the run's end takes it."""
        now = self.clock()
        with self.sessions.begin() as session:
            run = session.get(Run, run_id)
            if run is None or run.status != RunStatus.RUNNING.value:
                return run.job if run else None  # already recorded (events can be delivered twice)
            job = run.job
            run.status, run.ended_at, run.exit_code, run.message = status.value, now, exit_code, message
            if energy is not None:
                energy.run_id = run_id
                session.add(energy)
            if status == RunStatus.SUCCEEDED:
                job.result = result
                transition(session, job, JobState.SUCCEEDED, "finished", now)
            elif status == RunStatus.CANCELLED and job.cancel_requested:
                transition(session, job, JobState.CANCELLED, "cancelled by the user", now)
            elif status == RunStatus.LOST:
                transition(session, job, JobState.PENDING, f"node lost ({message}); queued again", now)
            else:
                job.error = message
                transition(session, job, JobState.FAILED, f"failed: {_first_line(message)}", now)
            return job

    def runs_with_basis(self, basis: str) -> list[tuple[RunEnergy, Run]]:
        """Finished runs whose emissions were computed on intensities of this basis."""
        with self.sessions() as session:
            return [tuple(row) for row in session.execute(
                select(RunEnergy, Run).join(Run, Run.id == RunEnergy.run_id).where(RunEnergy.carbon_basis == basis)
            ).all()]

    def update_emissions(self, energy_id: int, emissions) -> None:
        """Replace a run's emissions (e.g. once actual intensities replace the forecast it was charged at)."""
        with self.sessions.begin() as session:
            energy = session.get(RunEnergy, energy_id)
            energy.emissions_g, energy.intensity_g_per_kwh = emissions.emissions_g, emissions.intensity_g_per_kwh
            energy.carbon_source, energy.carbon_basis = emissions.source, emissions.basis

    # --- history --------------------------------------------------------------------------------------

    def history(self, since: datetime | None = None, until: datetime | None = None,
                kind: str | None = None) -> list[Job]:
        """Finished or running jobs that started in [since, until), with their runs and energy."""
        query = select(Job).where(Job.started_at.is_not(None))
        if since:
            query = query.where(Job.started_at >= since)
        if until:
            query = query.where(Job.started_at < until)
        if kind:
            query = query.where(Job.kind == kind)
        with self.sessions() as session:
            return list(session.scalars(
                query.order_by(Job.started_at).options(selectinload(Job.runs).selectinload(Run.energy))
            ).all())


def _first_line(message: str | None) -> str:
    lines = [line for line in (message or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown error"


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
