"""A meter for logical GPUs (no hardware): power follows a utilisation signal between nominal idle and max draw.

Its figures are labelled ``simulated`` and must never be shown as measurements. To make them at least follow
what a job does, ``ProcessUtilization`` turns the job's real CPU activity into the utilisation signal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

from workers.errors import MeterError
from workers.meters.base import METHOD_SIMULATED, EnergyMeter, EnergyReading
from workers.meters.cpu import process_tree_cpu_seconds
from workers.meters.gpu_types import GpuType


class SimulatedGpuMeter(EnergyMeter):
    """Simulated energy of ``gpu_count`` GPUs of one model, all at the same utilisation.

    Power per GPU is ``idle_w + (max_w - idle_w) * utilisation``, clipped at ``power_cap_w``; energy is the
    trapezoid rule between reads, so read often enough to follow the utilisation signal.
    """

    method = METHOD_SIMULATED

    def __init__(
        self,
        gpu_type: GpuType,
        gpu_count: int,
        utilization: Callable[[], float],
        power_cap_w: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """utilization: returns the current utilisation, 0 to 1 (clipped). power_cap_w: per GPU. Units: W."""
        if gpu_count < 1:
            raise MeterError(f"a simulated GPU meter needs at least one GPU, got gpu_count={gpu_count}")
        if power_cap_w is not None and power_cap_w <= 0:
            raise MeterError(f"power_cap_w must be positive (or None for no cap), got {power_cap_w}")
        self.gpu_type = gpu_type
        self.gpu_count = gpu_count
        self.power_cap_w = power_cap_w
        self._utilization = utilization
        self._clock = clock
        self._energy_j = 0.0
        self._last_s = clock()
        self._last_power_w = self._power_w()

    def _power_w(self) -> float:
        """The draw of all the GPUs at the current utilisation. Units: W."""
        utilization = min(1.0, max(0.0, self._utilization()))
        per_gpu_w = self.gpu_type.idle_w + (self.gpu_type.max_w - self.gpu_type.idle_w) * utilization
        if self.power_cap_w is not None:
            # A cap limits the busy draw; it cannot push an idle board below its idle draw.
            per_gpu_w = min(per_gpu_w, max(self.power_cap_w, self.gpu_type.idle_w))
        return self.gpu_count * per_gpu_w

    def read(self) -> EnergyReading:
        """Simulated energy since open (J) and the draw now (W)."""
        now = self._clock()
        power_w = self._power_w()
        self._energy_j += (self._last_power_w + power_w) / 2 * (now - self._last_s)
        self._last_s, self._last_power_w = now, power_w
        return EnergyReading(timestamp_s=now, energy_j=self._energy_j, power_w=power_w)


class ProcessUtilization:
    """A utilisation signal from real CPU use: the share of ``cores`` cores that a process tree used.

    Each call covers the time since the previous call (the first, since construction), clipped to [0, 1].
    A process that has exited reads 0.
    """

    def __init__(self, pid: int | Sequence[int], cores: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """cores: how many busy cores count as full utilisation (default: the cores this process may use)."""
        self._pid = pid
        self._cores = cores if cores is not None else float(len(os.sched_getaffinity(0)))
        if self._cores <= 0:
            raise MeterError(f"cores must be positive, got {cores}")
        self._clock = clock
        self._last_s = clock()
        self._last_cpu_s = process_tree_cpu_seconds(pid)
        self._last_utilization = 0.0

    def __call__(self) -> float:
        now = self._clock()
        cpu_s = process_tree_cpu_seconds(self._pid)
        if cpu_s is None:
            self._last_utilization = 0.0
        elif now > self._last_s:
            used_s = cpu_s - self._last_cpu_s if self._last_cpu_s is not None else 0.0
            self._last_utilization = min(1.0, max(0.0, used_s / (now - self._last_s) / self._cores))
            self._last_s, self._last_cpu_s = now, cpu_s
        # With no time elapsed there is nothing new to measure: repeat the previous figure.
        return self._last_utilization
