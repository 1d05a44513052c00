"""What a policy answers: start a job on given GPUs, let it wait, or suspend a running one, with the reason a user
reads."""

from __future__ import annotations

from dataclasses import dataclass

from policies.snapshot import Hold
from policies.status import Code, Status


NodeGpus = tuple[str, tuple[str, ...]]
"""A node and the GPU ids a job takes on it (empty on a pool)."""


@dataclass(frozen=True)
class Start:
    """Start ``job_id`` now on ``gpu_ids`` in ``zone``, at ``power_cap_w`` (None: default).

    A job on one node: ``node_id`` is that node and ``nodes`` is empty, so ``gpu_ids`` are all on ``node_id``.
    A gang over several nodes (``policies.gang``): ``nodes`` lists every node with its GPU ids, rank 0's node
    first and as many GPUs on each; ``node_id`` is rank 0's node and ``gpu_ids`` all of them, node by node.
    ``placement`` gives both cases as ``nodes``. On a zone pool without nodes ``node_id`` is the zone; on any
    pool the GPU id lists are empty (each node of a gang then holds ``gpus / len(nodes)``).

    cap_fraction: the cap as a fraction of the GPUs' maximum power (1.0 = full power), for clusters that know
    fractions rather than watts. until_s: run until then, then suspend the job and ask the policy again (only
    for interruptible jobs; None = run to completion).
    """

    job_id: str
    node_id: str
    zone: str
    gpu_ids: tuple[str, ...]
    power_cap_w: float | None = None
    reason: str = ""
    cap_fraction: float = 1.0
    until_s: float | None = None
    nodes: tuple[NodeGpus, ...] = ()

    @property
    def placement(self) -> tuple[NodeGpus, ...]:
        """Every node of the job with its GPU ids, rank 0's first (one entry for a one-node start)."""
        return self.nodes or ((self.node_id, self.gpu_ids),)


@dataclass(frozen=True)
class Wait:
    """Leave ``job_id`` waiting, for the reason ``status`` gives: its code, the plugin that said it and a reason
    shown to the user as it is.

    ``status.code`` tells what kind of wait it is: WAIT when the policy holds the job back on purpose (a cleaner
    window is coming: the job is *deferred*), UNSCHEDULABLE when it simply cannot run yet (no room, no power), and
    UNRESOLVABLE when it never can as the cluster is (no node of its zones is big enough). ``status.retry_at_s``:
    when the job should be offered again (None: whenever the cluster changes); ``status.room_in``: a job that
    waits for room only needs offering again when room frees in one of these zones (empty: when it frees
    anywhere), or at ``retry_at_s``. hold: the room the job keeps meanwhile, which the caller hands back in later
    snapshots until the job is offered again (None: none).
    """

    job_id: str
    status: Status
    hold: Hold | None = None

    @property
    def reason(self) -> str:
        return self.status.reason

    @property
    def deferred(self) -> bool:
        """Held back on purpose, rather than unable to run."""
        return self.status.code is Code.WAIT

    @property
    def unresolvable(self) -> bool:
        """It can never run on the cluster as it is."""
        return self.status.code is Code.UNRESOLVABLE

    @property
    def retry_at_s(self) -> float | None:
        return self.status.retry_at_s

    @property
    def room_in(self) -> tuple[str, ...]:
        return self.status.room_in


@dataclass(frozen=True)
class Suspend:
    """Suspend running ``job_id`` now, to make room or power for a job that is due (interruptible jobs only: it
    stops at a checkpoint and waits again). A policy lists it before the start it makes room for."""

    job_id: str
    reason: str


Decision = Start | Wait | Suspend
