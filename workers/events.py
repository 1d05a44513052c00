"""The events a GPU worker reports to the controller, which keeps them until the daemon has recorded them.

    Started    the job process runs and is metered
    Progress   about every report_interval_s: the job's latest progress line and the power samples since the last
    Finished   the job process has exited; or, made by the controller, its worker or node was lost

Each is a frozen dataclass of plain values (with the recorder's ``PowerSample`` and ``EnergyTotals``), so it
travels through Ray by pickling and its fields are checked by type checkers where dict keys were not.
They live in ``workers/`` because workers never import ``scheduler/``; the controller and the daemon import them.

Times (``at``) are Unix seconds. A sample is ``PowerSample(timestamp_s, gpu_power_w, cpu_power_w, gpu_energy_j,
cpu_energy_j)``, energies cumulative since the job started.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Union

from workers.meters.recorder import EnergyTotals, PowerSample


class CapMode(str, Enum):
    """How a run's power cap was applied: whether the GPU really ran under it.

    Only ``applied`` and ``simulated`` caps change what the job drew, so only they may be credited with a saving.
    """

    APPLIED = "applied"  # set through NVML and the enforced limit read back: the GPU ran under it
    DRY_RUN = "dry-run"  # worked out and logged, never set: the GPU ran at its default limit
    SIMULATED = "simulated"  # a logical GPU: its simulated meter clips the draw and the job is paced

    @property
    def in_force(self) -> bool:
        """Whether the job really ran under the cap (its energy reflects it)."""
        return self is not CapMode.DRY_RUN


@dataclass(frozen=True)
class PowerCap:
    """The power cap a run asked for and how it was applied. Units: W.

    limit_w: the limit in force (applied: the lowest enforced limit read back over the run's GPUs; simulated:
    the cap the simulated meter clips at) or, in a dry run, the limit that would have been set.
    """

    requested_w: float
    limit_w: float
    mode: CapMode


class ExitStatus(str, Enum):
    """How a run ended, as its ``Finished`` event says (the daemon's ``RunStatus`` has the same values)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped on request
    SUSPENDED = "suspended"  # stopped at a checkpoint, to be resumed
    LOST = "lost"  # its worker or node vanished (made by the controller)


@dataclass(frozen=True)
class Started:
    """The job's processes run on ``gpu_ids`` and are metered; ``power_cap`` None when no cap was asked.

    pid: the main (lowest-rank) process's; pids: every process of the job on this node, in rank order.
    """

    type: ClassVar[str] = "started"
    job_id: str
    run_id: int | str  # the daemon's run id (tests name runs with strings)
    worker_id: str
    node_id: str
    gpu_ids: tuple[Any, ...]
    pid: int
    at: float
    gpu_method: str
    cpu_method: str
    power_cap: PowerCap | None = None
    pids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Progress:
    """The job's latest progress line (``{}`` before its first) and the power samples since the last event.

    worker_id: the worker that metered the samples (a gang's node lead: the controller combines the nodes'
    samples into the gang's, see scheduler/cluster/gang.py); empty from older workers.
    """

    type: ClassVar[str] = "progress"
    job_id: str
    run_id: int | str
    at: float
    progress: dict[str, Any] = field(default_factory=dict)
    samples: tuple[PowerSample, ...] = ()
    worker_id: str = ""


@dataclass(frozen=True)
class Finished:
    """The run has ended.

    error: the child's error message, else the tail of its stderr (None on success or a requested stop).
    energy: the run's totals; None when the meters never opened. energy_partial: the totals stop at the last
    sample the controller saw (a lost run). power_cap: None when no cap was asked. A job that could not be
    launched still gets a ``failed`` Finished event (and no Started): no job is lost silently.
    """

    type: ClassVar[str] = "finished"
    job_id: str
    run_id: int | str
    worker_id: str
    at: float
    exit_status: ExitStatus
    exit_code: int | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    energy: EnergyTotals | None = None
    samples: tuple[PowerSample, ...] = ()
    power_cap: PowerCap | None = None
    energy_partial: bool = False


#: Every event a worker (or, for a lost run, the controller) reports.
WorkerEvent = Union[Started, Progress, Finished]
