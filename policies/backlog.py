"""The queue's demand: what every waiting job still has to run, by when, and from when it may run.

A carbon-aware policy defers work to clean hours one job at a time. Each deferral alone keeps its own deadline,
but together they may pile more work into a clean window than the cluster can run before the deadlines that
follow it, and then jobs that arrival order would have kept on time are late. To see that, a policy needs the
demand of every waiting job, not only of the jobs a round offers it: a caller that offers every waiting job
(a full round) passes nothing more; a caller that offers only the jobs whose situation changed (the simulator,
and the daemon's waiting queue between full rounds) passes the others' demand as a ``Backlog``
(``Snapshot.backlog``), kept from round to round.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple


class Demand(NamedTuple):
    """One waiting job's remaining demand.

    zones: where it may run (empty: any zone); gpus: how many at once; work_s: its remaining run time at full
    speed; deadline_s: when it must be done; ready_s: the earliest moment it will start, as far as the caller
    knows (the retry time of a job deferred on purpose; the round's time for a job that waits for room).
    """

    job_id: str
    zones: tuple[str, ...]
    gpus: int
    work_s: float
    deadline_s: float
    ready_s: float


class Backlog:
    """The demand of the waiting jobs a snapshot does not offer, kept by its caller from round to round.

    The caller ``put``s a job's demand when the job is left waiting and ``discard``s it when the job starts (or
    is offered again: an offered job's demand is the policy's to derive). ``gpus`` sums the GPUs of the jobs in
    it and ``gpus_by_zones`` per list of zones, so a policy can tell at once when all of them would fit in the
    free room. A policy reads it and never
    changes it.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, Demand] = {}
        self.gpus = 0
        self.gpus_by_zones: dict[tuple[str, ...], int] = {}  # zones (as listed) -> the GPUs of its jobs

    def put(self, demand: Demand) -> None:
        self.discard(demand.job_id)
        self._by_id[demand.job_id] = demand
        self.gpus += demand.gpus
        self.gpus_by_zones[demand.zones] = self.gpus_by_zones.get(demand.zones, 0) + demand.gpus

    def discard(self, job_id: str) -> None:
        old = self._by_id.pop(job_id, None)
        if old is not None:
            self.gpus -= old.gpus
            left = self.gpus_by_zones[old.zones] - old.gpus
            if left:
                self.gpus_by_zones[old.zones] = left
            else:
                del self.gpus_by_zones[old.zones]

    def __iter__(self) -> Iterator[Demand]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id
