"""The one interface every energy meter implements, and the measurement it returns.

A meter measures one thing (a set of GPUs, or a CPU package) from the moment it is opened. Readings are
cumulative, so the energy of a window is ``later - earlier``. Every reading carries how it was obtained
(``method``), because an estimate or a simulated figure must never be shown as a measurement.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

# The labels a figure may carry. Stored in the database and shown beside every number.
METHOD_NVML_COUNTER = "nvml-counter"
METHOD_NVML_POWER_POLL = "nvml-power-poll"
METHOD_RAPL = "rapl"
METHOD_ESTIMATE = "estimate"
METHOD_SIMULATED = "simulated"
METHODS = (METHOD_NVML_COUNTER, METHOD_NVML_POWER_POLL, METHOD_RAPL, METHOD_ESTIMATE, METHOD_SIMULATED)


@dataclass(frozen=True)
class EnergyReading:
    """A cumulative reading of one meter.

    timestamp_s: wall-clock time of the reading (Unix seconds).
    energy_j: energy since the meter was opened, in joules.
    power_w: the draw at (or just before) the reading, in watts.
    """

    timestamp_s: float
    energy_j: float
    power_w: float

    def __sub__(self, earlier: EnergyReading) -> EnergyWindow:
        return EnergyWindow(
            start_s=earlier.timestamp_s,
            end_s=self.timestamp_s,
            energy_j=self.energy_j - earlier.energy_j,
        )


@dataclass(frozen=True)
class EnergyWindow:
    """The energy used between two readings of one meter (joules, Unix seconds)."""

    start_s: float
    end_s: float
    energy_j: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.duration_s if self.duration_s > 0 else 0.0


class EnergyMeter(ABC):
    """Measures the energy of one device group from the moment it is opened.

    Call ``read()`` at least every ``max_poll_interval_s`` seconds: meters that integrate power polls (and
    counters that can wrap) are only accurate when read that often.
    """

    #: How this meter's figures are obtained: one of METHODS.
    method: str
    #: The longest gap between two reads that keeps the figure accurate, in seconds.
    max_poll_interval_s: float = 1.0

    @abstractmethod
    def read(self) -> EnergyReading:
        """Read the cumulative energy (J) since the meter was opened and the current power (W)."""

    def close(self) -> None:
        """Release what the meter holds (NVML handles, files). Idempotent."""
