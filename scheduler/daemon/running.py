"""The daemon's running jobs as a policy sees them (``policies.snapshot.RunningJob``) when it weighs suspending
one for a job that is due."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from scheduler.clock import to_unix_s
from scheduler.daemon.estimates import WorkEstimator
from scheduler.store.jobs import JobStore, OpenRun
from policies.snapshot import RunningJob
from scheduler.cluster.inventory import GpuInfo


class RunningJobs(Sequence[RunningJob]):
    """The jobs running at ``now``, read from the store only if a policy looks: one only does when a due job lacks
    room, when waiting jobs hold room (``policies.plugins.holds``) or when a power budget is set, so most ticks
    never pay for the query.

    A job is listed with the GPUs the controller's inventory shows it holding; a run the database still thinks
    open but whose job has left its GPUs (its finish not yet recorded) is left out, as it has nothing to free.
    """

    def __init__(self, store: JobStore, inventory: Iterable[GpuInfo], estimator: WorkEstimator, now: datetime):
        self._store, self._estimator, self._now = store, estimator, now
        # copied now: starts applied later in the same tick mark GPUs busy in the daemon's inventory
        self._held: dict[str, list[GpuInfo]] = {}
        for gpu in inventory:
            if gpu.busy_job is not None:
                self._held.setdefault(gpu.busy_job, []).append(gpu)
        self._jobs: list[RunningJob] | None = None

    def _built(self) -> list[RunningJob]:
        if self._jobs is None:
            runs = self._store.running_jobs(self._now) if self._held else []
            self._jobs = [self._running_job(run) for run in runs if run.job_id in self._held]
        return self._jobs

    def _running_job(self, run: OpenRun) -> RunningJob:
        gpus = self._held[run.job_id]
        # as for waiting jobs: the kind's per-GPU draw, here at the cap the run was started at
        draw_w = self._estimator.power_w(run.kind) * run.gpus * run.cap_power_fraction
        remaining_s = self._estimator.duration_s(run.kind, run.spec, run.progress, (run.run_s, run.runs))
        # its end as far as known: the work left at full speed (a capped run takes longer)
        end_s = to_unix_s(self._now) + remaining_s if remaining_s is not None else None
        return RunningJob(run.job_id, gpus[0].zone, gpus[0].node_id, run.gpus, draw_w, run.interruptible,
                          to_unix_s(run.deadline_at) if run.deadline_at else None, remaining_s,
                          tuple(g.worker_id for g in gpus), end_s=end_s)

    def __len__(self) -> int:
        return len(self._built())

    def __getitem__(self, i):
        return self._built()[i]
