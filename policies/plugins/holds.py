"""Holds: room kept for big jobs before their latest start, so that a deadline that can be met is met.

Carbon-aware planning defers work to clean hours, and whenever a zone has a free GPU a small job may take it. A
job that needs most of a node starts only once that node drains, which on a busy cluster may not happen before
its latest start: the carbon plan, made for each job alone, cannot see that. So, as backfilling schedulers
reserve room for the jobs at the head of their queue (EASY backfill), a big waiting job with a deadline holds its
GPUs and its power from the latest moment it could start at its slowest cap to its deadline, in whichever of its
zones has room then, or, where none has room by then, from the first moment one has while it could still make
its deadline at a faster cap (as EASY backfill reserves at the earliest time the head job fits). The power held is
what it then needs: the least-drawing cap that still meets its deadline. Other jobs start only where they leave
every hold that could be kept still keepable.

Room is counted per node: a hold is kept only where its job's gang fits (``policies.gang``: K free GPUs on each
of N / K nodes of one zone), and jobs and holds take the nodes they would be placed on (first fit). A pool
without nodes is one node.
"""

from __future__ import annotations

from typing import Sequence

from policies import gang
from policies.framework import ClusterView, CycleState, is_due, job_draw_w, latest_start_s, steps_of
from policies.snapshot import FULL_POWER, CapStep, Hold, JobRequest
from policies.status import SUCCESS, Code, Status

EPS_W = 1e-9


class DeadlineHolds:
    """PreFilter: a hold for each offered job with a deadline that needs more than ``min_node_share`` of the
    largest node its zones have: its GPUs and the power it needs, from its latest start at its slowest cap (or,
    where there is no room by then, from when there is, up to its latest start at full speed).

    Filter: the zones where a job that is not due may start now and leave every hold that could be kept keepable.
    The holds are placed in the order they begin, each in the zone with most room then (counting the running
    jobs expected to run past it, the jobs started earlier in the cycle and the holds placed before it), and
    within the power budget; a hold with no room or power when it begins is placed at the first end of a running
    job or placed hold after which it fits, if that comes by its latest start. A job is counted at its slowest
    cap; where that would lose a hold, the caps that keep them are noted for the cap chooser (``allowed_steps``).
    A hold that begins after the job's own latest start may steer the job to another zone but not keep it waiting
    (earliest latest start first, as EDF): by then the job is due and starts whatever is held.
    """

    name = "DeadlineHolds"

    def __init__(self, min_node_share: float = 0.5):
        if not 0.0 <= min_node_share <= 1.0:
            raise ValueError(f"min_node_share must be between 0 and 1, got {min_node_share}")
        self.min_node_share = min_node_share

    def pre_filter(self, state: CycleState, jobs: Sequence[JobRequest]) -> None:
        all_zones = state.zones
        cluster = state.cluster
        for job in jobs:
            work_s = job.expected_duration_s
            if job.deadline_s is None or work_s is None:
                continue
            zones = cluster.possible_zones(job.zones or all_zones, job.gpus, job.gpus_per_node)
            largest = max([cluster.largest_node[z] for z in zones], default=0)
            if zones and job.gpus > self.min_node_share * largest:
                # from its latest start at its slowest cap: the time left to find room
                steps = steps_of(job)
                slowest = min(steps, key=lambda s: s.speed)
                start_s = min(max(state.now_s, job.deadline_s - work_s / slowest.speed), job.deadline_s)
                state.holds[job.job_id] = Hold(job.job_id, zones, start_s, max(job.deadline_s, start_s + work_s),
                                               job.gpus, job_draw_w(job), max(job.deadline_s - work_s, start_s), steps,
                                               job.gpus_per_node)

    def filter(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> tuple[tuple[str, ...], Status]:
        now = state.now_s
        if not state.holds or is_due(job, now):
            return zones, SUCCESS  # a job that is due cannot wait for anyone
        work_s = job.expected_duration_s
        steps = steps_of(job)
        slowest = min(steps, key=lambda s: s.speed)
        end_s = now + work_s / slowest.speed if work_s is not None else float("inf")
        holds = sorted((h for h in state.holds.values() if h.job_id != job.job_id), key=lambda h: (h.start_s, h.job_id))
        if not any(max(h.start_s, now) < end_s for h in holds):
            return zones, SUCCESS
        book = _Book(state)
        begins = book.place(holds)  # the holds that can be kept, and when each begins
        ahead = [h for h in holds if h.job_id in begins and begins[h.job_id] < end_s]
        if not ahead:
            return zones, SUCCESS
        lost, allowed = {}, {}
        for zone in zones:
            lost[zone] = self._lost(book, holds, ahead, begins, job, zone, FULL_POWER if work_s is None else slowest,
                                    now)
            if lost[zone] and work_s is not None and len(steps) > 1:
                # faster caps end sooner: the job may still start here at the caps that keep the holds (and its
                # own deadline, where one can)
                timely = [s for s in steps if job.deadline_s is None or now + work_s / s.speed <= job.deadline_s]
                fits = tuple(s for s in timely or steps
                             if not self._lost(book, holds, ahead, begins, job, zone, s, now))
                if fits:
                    allowed[zone], lost[zone] = fits, []
        for zone, fits in allowed.items():
            state.notes[self.name, job.job_id, zone] = fits
        kept = tuple(z for z in zones if not lost[z])
        if len(kept) == len(zones):
            return zones, SUCCESS
        latest_s = latest_start_s(job)
        latest_s = float("inf") if latest_s is None else latest_s
        if not kept:
            # only holds that begin before the job's latest start may keep it waiting
            kept = tuple(z for z in zones if all(begins[h.job_id] >= latest_s for h in lost[z]))
            if kept:
                return kept, SUCCESS
        first = min((h for z in zones for h in lost[z]), key=lambda h: begins[h.job_id])
        first_s = begins[first.job_id]
        when = "now" if first_s <= now else f"within {(first_s - now) / 3600:.1f} h"
        return kept, Status(Code.UNSCHEDULABLE, self.name,
                            f"waiting: starting now would take the room or power held for job {first.job_id}, "
                            f"which must start {when} to meet its deadline", retry_at_s=latest_s)

    @staticmethod
    def _lost(book: _Book, holds: list[Hold], ahead: list[Hold], begins: dict[str, float], job: JobRequest,
              zone: str, step: CapStep, now: float) -> list[Hold]:
        """The holds of ``ahead`` that could no longer be kept (by their latest start) if ``job`` started in
        ``zone`` at ``step`` now."""
        end_s = now + job.expected_duration_s / step.speed if job.expected_duration_s is not None else float("inf")
        nodes = book.cluster.choose(zone, job.gpus, job.gpus_per_node) or ((zone, job.gpus),)
        kept = book.place(holds, (zone, end_s, job.gpus, job_draw_w(job, step), nodes))
        return [h for h in ahead if h.job_id not in kept and begins[h.job_id] < end_s]


def allowed_steps(state: CycleState, job: JobRequest, zone: str) -> tuple[CapStep, ...] | None:
    """The caps at which ``job`` may start in ``zone`` and keep the holds (None: any cap)."""
    return state.notes.get((DeadlineHolds.name, job.job_id, zone))


Booked = tuple[str, float, int, float, tuple[tuple[str, int], ...]]
"""A job or hold in the book: zone, end (s), GPUs, draw (W), and its nodes, each with its GPU count."""


class _Book:
    """The room and power held by the running jobs and the jobs started this cycle, node by node, and until when
    (a job of unknown end: always), and which holds can be kept around them."""

    def __init__(self, state: CycleState):
        self.now_s = state.now_s
        self.cluster: ClusterView = state.cluster
        self.budget_w = state.snapshot.power_budget_w
        self.by_node: dict[str, dict[str, list[tuple[float, int]]]] = {}  # zone -> node -> (end, GPUs)
        self.draws: list[tuple[float, float]] = []
        for r in state.snapshot.running:
            if r.job_id not in state.stopped:
                end_s = float("inf") if r.end_s is None else r.end_s
                self._hold(r.zone, end_s, self.cluster.held_by(r).items(), r.draw_w)
        for s in state.started:
            self._hold(s.zone, s.end_s, s.nodes or ((s.zone, s.gpus),), s.draw_w)

    def _hold(self, zone: str, end_s: float, nodes, draw_w: float) -> None:
        by_node = self.by_node.setdefault(zone, {})
        for node, gpus in nodes:
            by_node.setdefault(node, []).append((end_s, gpus))
        self.draws.append((end_s, draw_w))

    def place(self, holds: list[Hold], extra: Booked | None = None) -> dict[str, float]:
        """When each of the ``holds`` (taken in the order they begin) that can be kept begins: at its start, in
        the zone with most room then, or else at the first end of a job or placed hold after which it fits, up
        to its latest start. ``extra``: a job to count as started now.

        A job may so push a hold towards its latest start (at full speed): in the traces of the benchmark, letting
        it do so missed fewer deadlines than keeping each hold's first moment (congested cluster, 5,000 / 7,000
        jobs: 2 / 36 misses over three forecasts against 4 / 50)."""
        placed: list[Booked] = []  # the holds kept
        begins: dict[str, float] = {}
        for h in holds:
            t0 = max(h.start_s, self.now_s)
            last_s = t0 if h.latest_s is None else max(h.latest_s, t0)
            ends = {end_s for end_s, _ in self.draws} | {p[1] for p in placed}
            if extra is not None:
                ends.add(extra[1])
            for t in [t0] + sorted(e for e in ends if t0 < e <= last_s):
                draw_w = h.draw_from_w(t)
                zone, nodes = self._zone_at(h, t, draw_w, placed, extra)
                if zone is not None:
                    placed.append((zone, h.end_s, h.gpus, draw_w, nodes))
                    begins[h.job_id] = t
                    break
        return begins

    def _zone_at(self, h: Hold, t: float, draw_w: float, placed: list[Booked],
                 extra: Booked | None) -> tuple[str | None, tuple[tuple[str, int], ...]]:
        """The zone of ``h`` with most room at ``t`` where its gang fits, with the nodes it takes there, if the
        budget has ``draw_w`` then; (None, ()) when there is none."""
        if self.budget_w is not None:
            then_w = (sum(d for end_s, d in self.draws if end_s > t) + sum(p[3] for p in placed if p[1] > t)
                      + (extra[3] if extra is not None and extra[1] > t else 0.0))
            if then_w + draw_w > self.budget_w + EPS_W:
                return None, ()
        best, room, where = None, h.gpus - 1, ()
        for zone in h.zones:
            free = self._free_at(zone, t, placed, extra)
            total = sum(free.values())
            if total <= room:
                continue
            if zone in self.cluster.pooled:
                nodes = ((zone, h.gpus),)
            else:
                k = gang.fit(free.values(), h.gpus, h.gpus_per_node)
                if k is None:
                    continue
                nodes = tuple((node, k) for node in gang.first_nodes(free, h.gpus, k))
            best, room, where = zone, total, nodes
        return best, where

    def _free_at(self, zone: str, t: float, placed: list[Booked], extra: Booked | None) -> dict[str, int]:
        """The GPUs of each node of ``zone`` that no job, hold placed so far or ``extra`` holds at ``t``."""
        held = self.by_node.get(zone, {})
        free = {node: size - sum(g for end_s, g in held.get(node, ()) if end_s > t)
                for node, size in self.cluster.node_sizes.get(zone, {}).items()}
        for booked in placed if extra is None else placed + [extra]:
            if booked[0] == zone and booked[1] > t:
                for node, gpus in booked[4]:
                    if node in free:
                        free[node] -= gpus
        return free
