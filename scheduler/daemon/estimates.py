"""How long a job will run and what it will draw, learned from the runs this daemon has recorded.

Carbon-aware placement needs both (a window is only "clean" for a job of a given length). Diffusion work is
regular: a training job's time is close to proportional to its optimizer steps, a sampling job's to its images x
denoising steps. So the estimate is units of work x the median seconds per unit of recent runs of that kind, plus
the process start-up; with no history yet, nominal rates stand in (and are replaced as soon as runs finish).
The daemon keeps the recent runs in memory (``RecentRuns``), so scheduling does not read them again each tick.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Iterable

#: Seconds per unit of work before any run has been seen: nominal, for a small model on one CPU thread.
NOMINAL_S_PER_UNIT = {"diffusion-train": 0.15, "diffusion-sample": 0.004}
#: Seconds a job process spends starting (interpreter, torch, diffusers) before its first step.
NOMINAL_STARTUP_S = 6.0
#: Estimates are stretched by this much: running late risks a deadline, running early only some saving.
SAFETY_FACTOR = 1.25
#: How many of the latest succeeded runs (of all kinds) estimates learn from.
RECENT_RUNS = 200


def work_units(kind: str, spec: dict[str, Any], result: dict[str, Any] | None = None) -> float | None:
    """Units of work of a job: training steps, or images x denoising steps; None for unknown kinds."""
    if kind == "diffusion-train":
        if result and result.get("steps_this_run") is not None:
            return float(result["steps_this_run"])
        return float(spec.get("steps") or 0) or None
    if kind == "diffusion-sample":
        if result and result.get("num_inference_steps"):
            return float(result.get("num_images", 0)) * float(result["num_inference_steps"])
        steps = spec.get("num_inference_steps") or 50
        return float(spec.get("num_images") or 16) * float(steps)
    return None


@dataclass(frozen=True)
class FinishedRun:
    """What an estimate learns from: a succeeded run's kind, spec, result, length and GPU energy."""

    kind: str
    spec: dict[str, Any]
    result: dict[str, Any] | None
    duration_s: float
    gpu_energy_j: float
    gpus: int


class WorkEstimator:
    """Expected run time (s, at full speed) and per-GPU draw (W) of jobs, from recent finished runs."""

    def __init__(self, runs: Iterable[FinishedRun], default_power_w: float = 300.0):
        self._s_per_unit: dict[str, float] = {}
        self._power_w: dict[str, float] = {}
        by_kind: dict[str, list[FinishedRun]] = {}
        for run in runs:
            by_kind.setdefault(run.kind, []).append(run)
        for kind, kind_runs in by_kind.items():
            rates = [(r.duration_s - NOMINAL_STARTUP_S) / u for r in kind_runs
                     if (u := work_units(r.kind, r.spec, r.result)) and r.duration_s > NOMINAL_STARTUP_S]
            if rates:
                self._s_per_unit[kind] = statistics.median(rates)
            draws = [r.gpu_energy_j / r.duration_s / max(r.gpus, 1) for r in kind_runs if r.duration_s > 0]
            if draws:
                self._power_w[kind] = statistics.median(draws)
        self._default_power_w = default_power_w

    def duration_s(self, kind: str, spec: dict[str, Any], progress: dict[str, Any] | None = None,
                   own_runs: tuple[float, int] | None = None) -> float | None:
        """Seconds the job still needs at full speed (a suspended job: what remains after its progress).

        own_runs: (seconds run so far, number of runs) of this job; a job that has run is its own best
        predictor (its knobs — bf16, gradient checkpointing, batch size — change its pace).
        """
        units = work_units(kind, spec)
        rate = self._s_per_unit.get(kind, NOMINAL_S_PER_UNIT.get(kind))
        if units is None or rate is None:
            return None
        done = float(progress.get("step") or 0) if kind == "diffusion-train" and progress else 0.0
        if done and progress.get("total"):
            units = max(float(progress["total"]) - done, 0.0)
            if own_runs and own_runs[0] > own_runs[1] * NOMINAL_STARTUP_S:
                rate = (own_runs[0] - own_runs[1] * NOMINAL_STARTUP_S) / done
        return SAFETY_FACTOR * (NOMINAL_STARTUP_S + units * rate)

    def power_w(self, kind: str) -> float:
        """Expected average draw per GPU (W)."""
        return self._power_w.get(kind, self._default_power_w)


class RecentRuns:
    """The latest succeeded runs, newest first, and the ``WorkEstimator`` learned from them, kept in memory.

    ``load`` reads the latest runs from the database, newest first; it is called once, on first use. Each run
    that succeeds afterwards is passed to ``add``, so the estimator stays the one a fresh load would give.
    """

    def __init__(self, load: Callable[[], Iterable[FinishedRun]], limit: int = RECENT_RUNS):
        self._load = load
        self._limit = limit
        self._runs: deque[FinishedRun] | None = None
        self._estimator: WorkEstimator | None = None

    def estimator(self) -> WorkEstimator:
        """The estimator learned from the latest runs (loaded now if this is the first use)."""
        if self._runs is None:
            self._runs = deque(islice(self._load(), self._limit), maxlen=self._limit)
            self._estimator = WorkEstimator(self._runs)
        return self._estimator

    def add(self, run: FinishedRun) -> None:
        """Learn from a run that has just succeeded; the oldest run beyond the limit is forgotten."""
        if self._runs is None:
            return  # nothing loaded yet: the first use will load this run with the others
        self._runs.appendleft(run)
        # A new estimator rather than an update in place: a tick holding the old one sees one consistent view.
        self._estimator = WorkEstimator(self._runs)
