"""What a policy sees: a frozen picture of the waiting jobs, the GPUs and the carbon signal at one instant.

The daemon builds it from the database and the Ray controller; the simulator builds it from its virtual
cluster. Times are seconds on the caller's clock (``now_s``); a policy never reads a clock itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

if TYPE_CHECKING:
    from policies.backlog import Demand
    from policies.forecast import CarbonForecast


@dataclass(frozen=True)
class CapStep:
    """At ``cap_fraction`` x the GPU's maximum power a job runs at ``speed`` x full speed, drawing
    ``power_fraction`` x its full-speed power."""

    cap_fraction: float
    speed: float
    power_fraction: float


@dataclass(frozen=True)
class PowerProfile:
    """The power caps a kind of job may run at; ``steps`` always holds the full-power step (1, 1, 1)."""

    name: str
    steps: tuple[CapStep, ...]


FULL_POWER = CapStep(1.0, 1.0, 1.0)


@dataclass(frozen=True)
class ZonePool:
    """A zone's GPUs counted rather than listed (the simulator's cluster): ``gpus`` in all, ``free_gpus`` idle.

    Without ``node_ids`` the pool has no node boundaries: it behaves as one node named after the zone, and any job
    that fits in ``free_gpus`` fits, whatever its ``gpus_per_node``. With them, the zone is ``len(node_ids)`` nodes
    of ``gpus_per_node`` GPUs each, ``free_by_node`` counting the idle ones on each (in the same order), and jobs
    are placed on nodes as on listed GPUs (see ``policies.gang``). Decisions on a pool carry no GPU ids.
    """

    zone: str
    gpus: int
    free_gpus: int
    node_ids: tuple[str, ...] = ()
    free_by_node: tuple[int, ...] = ()

    @property
    def gpus_per_node(self) -> int | None:
        """The size of each node (None: a pool without nodes)."""
        return self.gpus // len(self.node_ids) if self.node_ids else None


@dataclass(frozen=True)
class JobRequest:
    """A job that may be started.

    zones: allowed zones, the first being the job's home zone; empty means any zone.
    deadline_s: latest completion time, or None for no deadline.
    expected_duration_s / power_w: what is known of the run time the job still needs at full speed (for a
    suspended job, what remains) and its per-GPU draw (W), or None when unknown.
    power_profile: the caps the job may run at (see ``PowerProfile``); None = full power only.
    started_s: when the job first started (a suspended interruptible job), or None.
    gpus_per_node: the job's GPUs run as one gang in one zone, ``gpus_per_node`` on each of
    ``gpus / gpus_per_node`` nodes (it divides ``gpus``: torchrun wants the same local world size on every
    node); None: the fewest nodes that fit now (one node when one has room for all, else the same number on
    each of as few nodes as possible; see ``policies.gang``). A pool without nodes ignores it.
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
    power_profile: PowerProfile | None = None
    started_s: float | None = None
    gpus_per_node: int | None = None


@dataclass(frozen=True)
class GpuSlot:
    """One GPU of the cluster: where it is and whether a job holds it."""

    gpu_id: str
    node_id: str
    zone: str
    busy: bool = False
    max_power_w: float | None = None


@dataclass(frozen=True)
class RunningJob:
    """A job running now, as a policy weighs suspending it for a job that is due.

    draw_w: what it draws now on all its GPUs; remaining_s: the work it has left, in seconds at full speed (None:
    unknown); gpu_ids: its GPUs (empty on a pool), on whichever nodes they are; end_s: when it is expected to give
    its GPUs back (at its cap, or at a planned suspension; None: unknown). nodes: on a pool with nodes, a gang's
    nodes (``node_id`` first), each holding ``gpus / len(nodes)`` of its GPUs; empty: all on ``node_id``.
    """

    job_id: str
    zone: str
    node_id: str
    gpus: int
    draw_w: float
    interruptible: bool
    deadline_s: float | None
    remaining_s: float | None
    gpu_ids: tuple[str, ...] = ()
    end_s: float | None = None
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hold:
    """Room a waiting job keeps for itself: ``gpus`` GPUs in one of ``zones`` and the power it needs, from
    ``start_s`` to ``end_s`` (its deadline), so that other jobs started before then leave it free (see
    ``policies.plugins.holds``). Where the room is not there by ``start_s``, the hold begins when it is, up to
    ``latest_s``, its latest start at full speed. A policy asks for it with a ``Wait``; the caller hands it back in
    later snapshots that do not offer the job again.

    draw_w: its draw at full power; steps: its caps (empty: full power only). From a moment t on, it needs the
    least draw among the caps that still end its work (``end_s - latest_s`` at full speed) by ``end_s``.
    gpus_per_node: the job's gang shape (``JobRequest.gpus_per_node``): the room is kept on nodes.
    """

    job_id: str
    zones: tuple[str, ...]
    start_s: float
    end_s: float
    gpus: int
    draw_w: float
    latest_s: float | None = None  # None: start_s
    steps: tuple[CapStep, ...] = ()
    gpus_per_node: int | None = None

    def draw_from_w(self, t_s: float) -> float:
        """The power it needs if it begins at ``t_s``: at the least-drawing cap that still meets its deadline."""
        if not self.steps or self.latest_s is None:
            return self.draw_w
        speed = (self.end_s - self.latest_s) / max(self.end_s - t_s, 1e-9)
        fast_enough = [s.power_fraction for s in self.steps if s.speed >= speed - 1e-9]
        return self.draw_w * min(fast_enough, default=1.0)


@dataclass(frozen=True)
class Snapshot:
    """The world as a policy may see it at ``now_s``.

    waiting: jobs that may start, in arrival order.
    gpus: the cluster's GPUs one by one (the daemon); ``pools`` counts them per zone instead (the simulator).
    intensity_g_per_kwh: the current carbon intensity of each zone that has a signal.
    forecast: the carbon forecast a policy may consult (``policies.forecast.CarbonForecast``), or None.
    power_budget_w: the cluster-wide limit on the summed GPU draw, or None; power_draw_w: the draw now.
    running: the jobs running now, for policies that may suspend one (empty: none may be suspended); a caller
    may hand a lazy sequence, built only if a policy looks.
    holds: the room kept by waiting jobs that are not in ``waiting`` (a round that offers every waiting job, as
    the daemon's full rounds do, leaves it empty: the policy makes its holds afresh).
    backlog: the demand of the waiting jobs that are not in ``waiting`` (``policies.backlog``), so that a policy
    weighs the whole queue: a ``Backlog`` kept by the caller, or any collection of ``Demand``. A caller that offers
    every waiting job leaves it empty: the policy derives the demand from ``waiting``.
    expected: the demand of the jobs expected to arrive later (``policies.arrivals``: each ``Demand``'s
    ``ready_s`` its expected submission), weighed with the queue's; empty: no forecast of arrivals.
    """

    now_s: float
    waiting: tuple[JobRequest, ...]
    gpus: tuple[GpuSlot, ...]
    intensity_g_per_kwh: Mapping[str, float] = field(default_factory=dict)
    pools: tuple[ZonePool, ...] = ()
    forecast: CarbonForecast | None = None
    power_budget_w: float | None = None
    power_draw_w: float = 0.0
    running: Sequence[RunningJob] = ()
    holds: tuple[Hold, ...] = ()
    backlog: Collection[Demand] = ()
    expected: Collection[Demand] = ()

    def zones(self) -> tuple[str, ...]:
        """Every zone that has a GPU, in the order GPUs (then pools) are listed."""
        return tuple(dict.fromkeys([g.zone for g in self.gpus] + [p.zone for p in self.pools]))
