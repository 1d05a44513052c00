"""How long a job will run and what it will draw, learned from the runs this daemon has recorded.

Carbon-aware placement needs both (a window is only "clean" for a job of a given length). Work is regular: a
job's time is close to proportional to its units of work, which its kind defines (optimizer steps of a training
job, images x denoising steps of a sampling job). So the estimate is units of work x the median seconds per unit
of recent runs of that kind, plus the kind's process start-up; with no history yet, the kind's nominal rate stands
in (and is replaced as soon as runs finish). Everything per kind is asked of the kind (``workers.kinds``).
The daemon keeps the recent runs in memory (``RecentRuns``), so scheduling does not read them again each tick.
"""

from __future__ import annotations

import statistics
from collections import deque
from itertools import islice
from typing import Any, Callable, Iterable

from scheduler.store.finished_runs import RECENT_RUNS, FinishedRun
from workers.kinds import JobKind, KindRegistry, builtin_kinds

#: Estimates are stretched by this much: running late risks a deadline, running early only some saving.
SAFETY_FACTOR = 1.25


class WorkEstimator:
    """Expected run time (s, at full speed) and per-GPU draw (W) of jobs, from recent finished runs.

    kinds: the job kinds, asked for work units, start-up and nominal rates (the built-in kinds when None). A job
    of a kind not registered there has no duration estimate.
    """

    def __init__(self, runs: Iterable[FinishedRun], default_power_w: float = 300.0,
                 kinds: KindRegistry | None = None):
        self._kinds = kinds if kinds is not None else builtin_kinds()
        self._s_per_unit: dict[str, float] = {}
        self._power_w: dict[str, float] = {}
        by_kind: dict[str, list[FinishedRun]] = {}
        for run in runs:
            by_kind.setdefault(run.kind, []).append(run)
        for name, kind_runs in by_kind.items():
            kind = self._kind(name)
            if kind is not None:
                rates = [(r.duration_s - kind.startup_s) / u for r in kind_runs
                         if (u := kind.units_done(r.spec, r.result)) and r.duration_s > kind.startup_s]
                if rates:
                    self._s_per_unit[name] = statistics.median(rates)
            draws = [r.gpu_energy_j / r.duration_s / max(r.gpus, 1) for r in kind_runs if r.duration_s > 0]
            if draws:
                self._power_w[name] = statistics.median(draws)
        self._default_power_w = default_power_w

    def _kind(self, name: str) -> JobKind | None:
        return self._kinds.get(name) if name in self._kinds else None

    def duration_s(self, kind: str, spec: dict[str, Any], progress: dict[str, Any] | None = None,
                   own_runs: tuple[float, int] | None = None) -> float | None:
        """Seconds the job still needs at full speed (a suspended job: what remains after its progress); None when
        unknown (a kind that is not registered, or that cannot tell its work until the job's progress does).

        own_runs: (seconds run so far, number of runs) of this job; a job that has run is its own best
        predictor (its knobs — bf16, gradient checkpointing, batch size — change its pace).
        """
        job_kind = self._kind(kind)
        if job_kind is None:
            return None
        units = job_kind.work_units(spec)
        rate = self._s_per_unit.get(kind)
        if rate is None and units is not None:
            rate = job_kind.nominal_s_per_unit(spec)
        startup_s = job_kind.startup_s
        # Only a kind that resumes from a checkpoint keeps the progress of earlier runs; others start over.
        done = float(progress.get("step") or 0) if job_kind.interruptible and progress else 0.0
        if done and progress.get("total"):
            units = max(float(progress["total"]) - done, 0.0)
            if own_runs and own_runs[0] > own_runs[1] * startup_s:
                rate = (own_runs[0] - own_runs[1] * startup_s) / done
        if units is None or rate is None:  # a kind that cannot tell its work (a command) before its progress does
            return None
        return SAFETY_FACTOR * (startup_s + units * rate)

    def power_w(self, kind: str) -> float:
        """Expected average draw per GPU (W)."""
        return self._power_w.get(kind, self._default_power_w)


class RecentRuns:
    """The latest succeeded runs, newest first, and the ``WorkEstimator`` learned from them, kept in memory.

    ``load`` reads the latest runs from the database, newest first; it is called once, on first use. Each run
    that succeeds afterwards is passed to ``add``, so the estimator stays the one a fresh load would give.
    kinds: the job kinds the estimator asks (the built-in kinds when None).
    """

    def __init__(self, load: Callable[[], Iterable[FinishedRun]], limit: int = RECENT_RUNS,
                 kinds: KindRegistry | None = None):
        self._load = load
        self._limit = limit
        self._kinds = kinds if kinds is not None else builtin_kinds()
        self._runs: deque[FinishedRun] | None = None
        self._estimator: WorkEstimator | None = None

    def estimator(self) -> WorkEstimator:
        """The estimator learned from the latest runs (loaded now if this is the first use)."""
        if self._runs is None:
            self._runs = deque(islice(self._load(), self._limit), maxlen=self._limit)
            self._estimator = WorkEstimator(self._runs, kinds=self._kinds)
        return self._estimator

    def add(self, run: FinishedRun) -> None:
        """Learn from a run that has just succeeded; the oldest run beyond the limit is forgotten."""
        if self._runs is None:
            return  # nothing loaded yet: the first use will load this run with the others
        self._runs.appendleft(run)
        # A new estimator rather than an update in place: a tick holding the old one sees one consistent view.
        self._estimator = WorkEstimator(self._runs, kinds=self._kinds)
