"""Record a job's GPU and CPU energy while it runs: a background thread polls both meters.

The worker starts a recorder with the job, drains its samples now and then to stream them to the controller,
and stops it with the job to get the totals. The recorder reads the meters but does not close them: whoever
opened them closes them.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from workers.errors import MeterError
from workers.meters.base import EnergyMeter, EnergyReading

logger = logging.getLogger(__name__)


class PowerSample(NamedTuple):
    """One poll of a job's meters. Energies are cumulative since the recorder started.

    Units: timestamp_s Unix s; *_power_w W; *_energy_j J.
    """

    timestamp_s: float
    gpu_power_w: float
    cpu_power_w: float
    gpu_energy_j: float
    cpu_energy_j: float

    def to_list(self) -> list[float]:
        """The sample as a plain list, cheap to send through Ray; ``PowerSample(*values)`` rebuilds it."""
        return list(self)


@dataclass(frozen=True)
class EnergyTotals:
    """What a job used from start to end (or so far), and how each figure was obtained.

    Units: *_energy_j J; *_power_w W (GPU plus CPU); duration_s s; started_s and ended_s Unix s.
    """

    gpu_energy_j: float
    cpu_energy_j: float
    gpu_method: str
    cpu_method: str
    avg_power_w: float
    peak_power_w: float
    duration_s: float
    started_s: float
    ended_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnergyRecorder:
    """Polls a GPU meter and a CPU meter every ``interval_s`` seconds in a daemon thread.

    ``interval_s`` is shortened to the meters' ``max_poll_interval_s`` where they need faster reads. ``poll()``
    takes one sample synchronously, which is what the thread does each interval; tests call it directly with an
    injected clock instead of starting the thread.
    """

    def __init__(
        self,
        gpu_meter: EnergyMeter,
        cpu_meter: EnergyMeter,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gpu_meter = gpu_meter
        self.cpu_meter = cpu_meter
        self.interval_s = min(interval_s, gpu_meter.max_poll_interval_s, cpu_meter.max_poll_interval_s)
        self._clock = clock
        # Guards the meters (not thread-safe) and everything below; the thread and callers both poll.
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_readings: tuple[EnergyReading, EnergyReading] | None = None
        self._started_s = 0.0
        self._latest: PowerSample | None = None
        self._peak_power_w = 0.0
        self._undrained: list[PowerSample] = []
        self._totals: EnergyTotals | None = None

    def start(self) -> None:
        """Take the starting readings (the first sample, at zero energy) and start polling in the background."""
        with self._lock:
            if self._start_readings is not None:
                raise MeterError("this recorder was already started: use a new recorder for each run")
            self._started_s = self._clock()
            self._start_readings = (self.gpu_meter.read(), self.cpu_meter.read())
            self._sample(self._started_s, *self._start_readings)
        self._thread = threading.Thread(target=self._run, name="energy-recorder", daemon=True)
        self._thread.start()

    def poll(self) -> PowerSample:
        """Read both meters once and record the sample."""
        with self._lock:
            return self._poll_locked()

    def _poll_locked(self) -> PowerSample:
        if self._start_readings is None:
            raise MeterError("the recorder has not been started: call start() first")
        if self._totals is not None:
            raise MeterError("the recorder was stopped: its totals are final; start a new recorder to go on")
        now = self._clock()
        return self._sample(now, self.gpu_meter.read(), self.cpu_meter.read())

    def _sample(self, now: float, gpu: EnergyReading, cpu: EnergyReading) -> PowerSample:
        gpu_start, cpu_start = self._start_readings
        sample = PowerSample(
            timestamp_s=now,
            gpu_power_w=gpu.power_w,
            cpu_power_w=cpu.power_w,
            gpu_energy_j=gpu.energy_j - gpu_start.energy_j,
            cpu_energy_j=cpu.energy_j - cpu_start.energy_j,
        )
        self._undrained.append(sample)
        self._latest = sample
        self._peak_power_w = max(self._peak_power_w, sample.gpu_power_w + sample.cpu_power_w)
        return sample

    def _run(self) -> None:
        failing = False
        while not self._stopping.wait(self.interval_s):
            try:
                self.poll()
            except MeterError as err:
                # Say so once when reads start failing and once when they recover, not every interval.
                if not failing:
                    logger.warning("energy meter read failed; retrying every %.2f s: %s", self.interval_s, err)
                failing = True
            else:
                if failing:
                    logger.info("energy meter reads recovered")
                failing = False

    def drain_samples(self) -> list[PowerSample]:
        """The samples taken since the previous drain (or since start), oldest first.

        Drain regularly: undrained samples accumulate (two per second at the default interval).
        """
        with self._lock:
            samples, self._undrained = self._undrained, []
        return samples

    def snapshot(self) -> EnergyTotals:
        """The totals so far, from a fresh reading; after ``stop()``, the final totals."""
        with self._lock:
            if self._totals is not None:
                return self._totals
            return self._totals_at(self._poll_locked())

    def stop(self) -> EnergyTotals:
        """Take a final reading, stop the thread and return the totals. Idempotent.

        If the final reading fails, the totals end at the last successful sample (logged as a warning).
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._totals is None:
                try:
                    last = self._poll_locked()
                except MeterError as err:
                    if self._latest is None:
                        raise
                    logger.warning("final energy reading failed; totals end at the last sample: %s", err)
                    last = self._latest
                self._totals = self._totals_at(last)
            return self._totals

    def _totals_at(self, sample: PowerSample) -> EnergyTotals:
        duration_s = sample.timestamp_s - self._started_s
        energy_j = sample.gpu_energy_j + sample.cpu_energy_j
        return EnergyTotals(
            gpu_energy_j=sample.gpu_energy_j,
            cpu_energy_j=sample.cpu_energy_j,
            gpu_method=self.gpu_meter.method,
            cpu_method=self.cpu_meter.method,
            avg_power_w=energy_j / duration_s if duration_s > 0 else 0.0,
            peak_power_w=self._peak_power_w,
            duration_s=duration_s,
            started_s=self._started_s,
            ended_s=sample.timestamp_s,
        )


def downsample(samples: Sequence[PowerSample], max_points: int) -> list[PowerSample]:
    """Reduce samples to at most ``max_points`` evenly spaced in time, keeping the energy exact.

    The cumulative energies are resampled (linear interpolation) at the new times, so every kept point, the
    first and last included, has the true energy so far; each point's power is the mean over the bucket that
    ends at it (energy delta / time delta). Short peaks are averaged away: use ``EnergyTotals.peak_power_w``.
    """
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2 (the first and last samples), got {max_points}")
    if len(samples) <= max_points:
        return list(samples)
    first, last = samples[0], samples[-1]
    times = [s.timestamp_s for s in samples]
    span_s = last.timestamp_s - first.timestamp_s
    points = [first]
    for k in range(1, max_points):
        t = first.timestamp_s + span_s * k / (max_points - 1) if k < max_points - 1 else last.timestamp_s
        gpu_energy_j, cpu_energy_j = _energy_at(samples, times, t)
        previous = points[-1]
        dt = t - previous.timestamp_s
        points.append(
            PowerSample(
                timestamp_s=t,
                gpu_power_w=(gpu_energy_j - previous.gpu_energy_j) / dt if dt > 0 else 0.0,
                cpu_power_w=(cpu_energy_j - previous.cpu_energy_j) / dt if dt > 0 else 0.0,
                gpu_energy_j=gpu_energy_j,
                cpu_energy_j=cpu_energy_j,
            )
        )
    return points


def _energy_at(samples: Sequence[PowerSample], times: list[float], t: float) -> tuple[float, float]:
    """Cumulative (GPU, CPU) energy at time t, interpolated between the samples around it. Units: J."""
    i = bisect.bisect_right(times, t) - 1  # the last sample at or before t
    if i >= len(samples) - 1:
        return samples[-1].gpu_energy_j, samples[-1].cpu_energy_j
    before, after = samples[i], samples[i + 1]
    share = (t - before.timestamp_s) / (after.timestamp_s - before.timestamp_s)
    return (
        before.gpu_energy_j + share * (after.gpu_energy_j - before.gpu_energy_j),
        before.cpu_energy_j + share * (after.cpu_energy_j - before.cpu_energy_j),
    )
