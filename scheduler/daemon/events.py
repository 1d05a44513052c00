"""What the daemon records of the workers' events: progress, power samples, and a run's end with its energy and
how its power cap was applied; and of a run the controller lost, what its samples measured."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

from scheduler.carbon.emissions import RunEmissions
from scheduler.clock import from_unix_s, to_unix_s
from scheduler.daemon.estimates import RecentRuns
from scheduler.errors import InvalidTransition
from scheduler.store.job_state import RunStatus
from scheduler.store.jobs import JobStore
from workers.events import Finished, Progress, Started, WorkerEvent
from workers.meters.recorder import EnergyTotals, PowerSample

log = logging.getLogger(__name__)

#: Seconds within which two samples' times are the same sample (stored times round to the microsecond).
SAME_SAMPLE_S = 1e-3
#: How a lost run's energy was measured when the daemon did not see its start (it was restarted since).
UNKNOWN_METHOD = "unknown"


class SampleMark(NamedTuple):
    """Unix times of a run's first and last stored power samples (None: none yet)."""

    first_s: float | None
    last_s: float | None


class EventRecorder:
    """Turns the controller's events into store writes; remembers which samples of each open run it kept.

    Recording is idempotent: the controller delivers an event again until the daemon acknowledges it, which it does
    only after the commit, so an event may arrive twice (the daemon died, or the database went away, in between).
    A run's end is recorded once (a closed run's events are passed over), and power samples at or before the
    last one stored for the run are not stored again.
    """

    def __init__(self, store: JobStore, run_emissions: RunEmissions, recent_runs: RecentRuns,
                 max_samples_per_run: int):
        self.store, self.run_emissions, self.recent_runs = store, run_emissions, recent_runs
        self._max_samples_per_run = max_samples_per_run
        self._sample_marks: dict[int, SampleMark] = {}  # run -> its first and last stored samples' times
        self._methods: dict[int, tuple[str, str]] = {}  # run -> how its GPU and CPU energy are measured

    def record(self, event: WorkerEvent) -> bool:
        """Record one worker event; True when a run finished (the cluster has room again).

        A ``Started`` event changes nothing in the store: the run was opened when the daemon started it, and how
        its cap was applied comes again with its ``Finished`` event (also when the controller makes that one); how
        its energy is measured is remembered, for the run's energy should it be lost. A run ends when its
        ``Finished`` event says (for a lost one, at its last sample), not when the daemon hears of it.
        Raises DatabaseUnavailable when the database is away: what was not committed is written when the event
        comes again.
        """
        if isinstance(event, Started):
            self._methods[int(event.run_id)] = (event.gpu_method, event.cpu_method)
        if not isinstance(event, (Progress, Finished)):
            return False
        run_id = int(event.run_id)
        if not self.store.run_is_open(run_id):
            return False  # delivered again after a daemon restart: already recorded
        if isinstance(event, Progress):
            kept, mark = self._thin(run_id, event.samples)
            self.store.add_progress(run_id, event.progress, kept)
            self._sample_marks[run_id] = mark
            return False
        kept, mark = self._thin(run_id, event.samples, keep_last=True)
        self.store.add_samples(run_id, kept)
        self._sample_marks[run_id] = mark  # stored: a retry of this event must not store them again
        status = RunStatus(event.exit_status.value)
        energy = self.run_emissions.energy_record(run_id, event.energy, event.samples, event.power_cap)
        ended_s = event.energy.ended_s if event.energy_partial and event.energy else event.at
        try:
            self.store.finish_run(run_id, status, event.exit_code, event.error, energy, event.result,
                                  power_cap=event.power_cap, ended_at=from_unix_s(ended_s))
        except InvalidTransition as exc:
            log.warning("run %s finished but its job cannot record it: %s", run_id, exc)
        else:
            if status is RunStatus.SUCCEEDED and (run := self.store.finished_run(run_id)) is not None:
                self.recent_runs.add(run)
        self._forget(run_id)
        return True

    def record_lost(self, run_id: int, started_s: float, reason: str) -> None:
        """Close a run the controller no longer knows (it, or its node, restarted): it ends at its last stored
        sample (at its start when it has none), and its energy is what its samples measured up to then.

        ``started_s``: the run's start (Unix s). How the energy was measured is known if the daemon saw the run
        start, else it is ``unknown``; its power cap counts as not in force (how it was applied was never told).
        """
        stored = self.store.stored_samples(run_id)
        energy, ended_s = None, started_s
        if stored:
            points = [PowerSample(to_unix_s(s.at), s.gpu_power_w, s.cpu_power_w, s.gpu_energy_j, s.cpu_energy_j)
                      for s in stored]
            ended_s = points[-1].timestamp_s
            gpu_method, cpu_method = self._methods.get(run_id, (UNKNOWN_METHOD, UNKNOWN_METHOD))
            energy = self.run_emissions.energy_record(run_id, totals_of(points, started_s, gpu_method, cpu_method),
                                                      (), None)
        self.store.finish_run(run_id, RunStatus.LOST, None, reason, energy, None, ended_at=from_unix_s(ended_s))
        self._forget(run_id)

    def _forget(self, run_id: int) -> None:
        self._sample_marks.pop(run_id, None)
        self._methods.pop(run_id, None)

    def _thin(self, run_id: int, samples: Sequence[PowerSample],
              keep_last: bool = False) -> tuple[list[PowerSample], SampleMark]:
        """The samples to store, and the run's mark once they are: samples after the last stored one, at least a
        gap apart that grows with the run's age, so long runs stay bounded.

        Energies in samples are cumulative, so dropping a sample loses no energy, only time resolution.
        """
        mark = self._sample_marks.get(run_id) or self._stored_mark(run_id)
        first_s, last_s = mark
        kept = []
        for i, sample in enumerate(samples):
            if first_s is None:
                first_s = sample.timestamp_s
            if last_s is not None and sample.timestamp_s <= last_s + SAME_SAMPLE_S:
                continue  # stored already: this event came before
            gap_s = max(1.0, (sample.timestamp_s - first_s) / self._max_samples_per_run)
            if last_s is None or sample.timestamp_s - last_s >= gap_s or (keep_last and i == len(samples) - 1):
                kept.append(sample)
                last_s = sample.timestamp_s
        return kept, SampleMark(first_s, last_s)

    def _stored_mark(self, run_id: int) -> SampleMark:
        """The times of the run's first and last stored samples (the daemon restarted since they were stored)."""
        stored = self.store.stored_samples(run_id)
        if not stored:
            return SampleMark(None, None)
        return SampleMark(to_unix_s(stored[0].at), to_unix_s(stored[-1].at))


def totals_of(samples: Sequence[PowerSample], started_s: float, gpu_method: str, cpu_method: str) -> EnergyTotals:
    """A run's energy totals from its power samples (energies cumulative since ``started_s``), up to the last."""
    last = samples[-1]
    duration_s = max(0.0, last.timestamp_s - started_s)
    energy_j = last.gpu_energy_j + last.cpu_energy_j
    return EnergyTotals(gpu_energy_j=last.gpu_energy_j, cpu_energy_j=last.cpu_energy_j, gpu_method=gpu_method,
                        cpu_method=cpu_method, avg_power_w=energy_j / duration_s if duration_s > 0 else 0.0,
                        peak_power_w=max(s.gpu_power_w + s.cpu_power_w for s in samples), duration_s=duration_s,
                        started_s=started_s, ended_s=last.timestamp_s)
