"""What the daemon records of the workers' events: progress, power samples, and a run's end with its energy."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.carbon.emissions import RunEmissions
from scheduler.daemon.estimates import RecentRuns
from scheduler.errors import InvalidTransition
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore

log = logging.getLogger(__name__)


class EventRecorder:
    """Turns the controller's events into store writes; remembers which samples of each open run it kept."""

    def __init__(self, store: JobStore, run_emissions: RunEmissions, recent_runs: RecentRuns,
                 max_samples_per_run: int):
        self.store, self.run_emissions, self.recent_runs = store, run_emissions, recent_runs
        self._max_samples_per_run = max_samples_per_run
        self._sample_marks: dict[int, tuple[float, float | None]] = {}  # run -> first, last kept

    def record(self, event: dict[str, Any]) -> bool:
        """Record one worker event; True when a run finished (the cluster has room again)."""
        kind = event.get("type")
        run_id = int(event["run_id"])
        if not self.store.run_is_open(run_id):
            return False  # delivered again after a daemon restart: already recorded
        if kind == "progress":
            self.store.add_progress(run_id, event.get("progress"), self._thin(run_id, event.get("samples") or []))
            return False
        if kind != "finished":
            return False
        samples = event.get("samples") or []
        self.store.add_samples(run_id, self._thin(run_id, samples, keep_last=True))
        self._sample_marks.pop(run_id, None)
        status = _run_status(event.get("exit_status"))
        energy = self.run_emissions.energy_record(run_id, event.get("energy") or {}, samples)
        try:
            self.store.finish_run(run_id, status, event.get("exit_code"), event.get("error"), energy,
                                  event.get("result"))
        except InvalidTransition as exc:
            log.warning("run %s finished but its job cannot record it: %s", run_id, exc)
        else:
            if status is RunStatus.SUCCEEDED and (run := self.store.finished_run(run_id)) is not None:
                self.recent_runs.add(run)
        return True

    def _thin(self, run_id: int, samples: list[list[float]], keep_last: bool = False) -> list[list[float]]:
        """Keep samples at least a gap apart that grows with the run's age, so long runs stay bounded.

        Energies in samples are cumulative, so dropping a sample loses no energy, only time resolution.
        """
        kept = []
        for i, sample in enumerate(samples):
            first_s, last_s = self._sample_marks.get(run_id, (sample[0], None))
            gap_s = max(1.0, (sample[0] - first_s) / self._max_samples_per_run)
            if last_s is None or sample[0] - last_s >= gap_s or (keep_last and i == len(samples) - 1):
                kept.append(sample)
                last_s = sample[0]
            self._sample_marks[run_id] = (first_s, last_s)
        return kept


def _run_status(exit_status: str | None) -> RunStatus:
    try:
        return RunStatus(exit_status)
    except ValueError:
        return RunStatus.FAILED
