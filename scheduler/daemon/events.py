"""What the daemon records of the workers' events: progress, power samples, and a run's end with its energy and
how its power cap was applied."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from scheduler.carbon.emissions import RunEmissions
from scheduler.daemon.estimates import RecentRuns
from scheduler.errors import InvalidTransition
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore
from workers.events import Finished, Progress, WorkerEvent
from workers.meters.recorder import PowerSample

log = logging.getLogger(__name__)


class EventRecorder:
    """Turns the controller's events into store writes; remembers which samples of each open run it kept."""

    def __init__(self, store: JobStore, run_emissions: RunEmissions, recent_runs: RecentRuns,
                 max_samples_per_run: int):
        self.store, self.run_emissions, self.recent_runs = store, run_emissions, recent_runs
        self._max_samples_per_run = max_samples_per_run
        self._sample_marks: dict[int, tuple[float, float | None]] = {}  # run -> first, last kept

    def record(self, event: WorkerEvent) -> bool:
        """Record one worker event; True when a run finished (the cluster has room again).

        A ``Started`` event changes nothing in the store: the run was opened when the daemon started it, and how
        its cap was applied comes again with its ``Finished`` event (also when the controller makes that one).
        """
        if not isinstance(event, (Progress, Finished)):
            return False
        run_id = int(event.run_id)
        if not self.store.run_is_open(run_id):
            return False  # delivered again after a daemon restart: already recorded
        if isinstance(event, Progress):
            self.store.add_progress(run_id, event.progress, self._thin(run_id, event.samples))
            return False
        self.store.add_samples(run_id, self._thin(run_id, event.samples, keep_last=True))
        self._sample_marks.pop(run_id, None)
        status = RunStatus(event.exit_status.value)
        energy = self.run_emissions.energy_record(run_id, event.energy, event.samples, event.power_cap)
        try:
            self.store.finish_run(run_id, status, event.exit_code, event.error, energy, event.result,
                                  power_cap=event.power_cap)
        except InvalidTransition as exc:
            log.warning("run %s finished but its job cannot record it: %s", run_id, exc)
        else:
            if status is RunStatus.SUCCEEDED and (run := self.store.finished_run(run_id)) is not None:
                self.recent_runs.add(run)
        return True

    def _thin(self, run_id: int, samples: Sequence[PowerSample], keep_last: bool = False) -> list[PowerSample]:
        """Keep samples at least a gap apart that grows with the run's age, so long runs stay bounded.

        Energies in samples are cumulative, so dropping a sample loses no energy, only time resolution.
        """
        kept = []
        for i, sample in enumerate(samples):
            first_s, last_s = self._sample_marks.get(run_id, (sample.timestamp_s, None))
            gap_s = max(1.0, (sample.timestamp_s - first_s) / self._max_samples_per_run)
            if last_s is None or sample.timestamp_s - last_s >= gap_s or (keep_last and i == len(samples) - 1):
                kept.append(sample)
                last_s = sample.timestamp_s
            self._sample_marks[run_id] = (first_s, last_s)
        return kept
