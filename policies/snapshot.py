"""What a policy sees: a frozen picture of the waiting jobs, the GPUs and the carbon signal at one instant.

The daemon builds it from the database and the Ray controller; the simulator builds it from its virtual
cluster. Times are seconds on the caller's clock (``now_s``); a policy never reads a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class JobRequest:
    """A job that may be started.

    zones: allowed zones, the first being the job's home zone; empty means any zone.
    deadline_s: latest completion time, or None for no deadline.
    expected_duration_s / power_w: what is known of the job's run time at full speed and its per-GPU draw
    (W), or None when unknown.
    """

    job_id: str
    gpus: int
    submitted_s: float
    zones: tuple[str, ...] = ()
    deadline_s: float | None = None
    interruptible: bool = False
    kind: str = ""
    priority: int = 0
    expected_duration_s: float | None = None
    power_w: float | None = None


@dataclass(frozen=True)
class GpuSlot:
    """One GPU of the cluster: where it is and whether a job holds it."""

    gpu_id: str
    node_id: str
    zone: str
    busy: bool = False
    max_power_w: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """The world as a policy may see it at ``now_s``.

    waiting: jobs that may start, in arrival order.
    intensity_g_per_kwh: the current carbon intensity of each zone that has a signal.
    """

    now_s: float
    waiting: tuple[JobRequest, ...]
    gpus: tuple[GpuSlot, ...]
    intensity_g_per_kwh: Mapping[str, float] = field(default_factory=dict)

    def zones(self) -> tuple[str, ...]:
        """Every zone that has a GPU, in the order GPUs are listed."""
        return tuple(dict.fromkeys(g.zone for g in self.gpus))
