"""Queue pressure: a deferral is allowed only while the whole queue still meets its deadlines in arrival of need.

Carbon-aware plugins defer work one job at a time (a cleaner start later, room in a cleaner zone, the next clean
piece of an interruptible job). On a busy cluster many such deferrals land in the same clean window, more work
than the cluster can start there before the latest starts that follow, and jobs that arrival order keeps on time
are late. So every deferral is weighed against the whole queue (``policies.backlog``): the offered jobs and the
snapshot's backlog, each with its GPUs, remaining work, deadline and the moment it may start, and the jobs
expected to arrive (``Snapshot.expected``, ``policies.arrivals``): work deferred ahead of a peak of arrivals is
work the peak then has no room for.

The test replays the queue as list scheduling would run it: from now on, at each moment a job becomes ready or a
running one ends, the ready jobs in order of their latest start (earliest-deadline-first; those already past it
last, as a pressed queue sorts them) take the room of their zones, each in the allowed zone with most free GPUs,
the running jobs giving theirs back at their expected ends. A job that starts there later than ``margin_s``
before its latest start is at risk. A deferral is refused (the job starts now) when it puts more jobs at risk
than the replay without it, or puts the deferred job itself at risk: a job at risk wherever it waits takes the
room it has now; and a deferred job must still start there ``own_margin_s`` (2 h) before its latest start. The
margins stand for what the expected arrivals miss. When all the waiting jobs would fit in the free GPUs at once
the queue is not pressed and the replay is skipped, whatever arrivals are expected (they press a queue that
already waits for room; counted alone, they would hold back deferrals on a cluster with room to spare, where a
day's arrivals often outnumber the free GPUs of the moment yet find room as they come). That is the common
case.
"""

from __future__ import annotations

import heapq
from typing import Sequence

import numpy as np
from numba import njit

from policies.framework import CycleState
from policies.snapshot import JobRequest

PRESSURE = "QueuePressure"
# At most this many grid points each way: the test costs intervals x jobs.
MAX_POINTS = 48


class QueuePressure:
    """PreFilter: the queue's replay for the cycle (``pressure_of``), against which deferrals are weighed.

    margin_s: a job counts as at risk when the replay starts it later than this before its latest start.
    own_margin_s: a deferred job itself must start in the replay at least this long before its latest start (the
    slack a job keeps when it waits for room in a cleaner zone, ``CarbonWindow``'s ``room_margin_s``): the replay
    sees the arrivals expected, not those that come, nor the order in which clean hours will be shared out.
    """

    name = PRESSURE

    def __init__(self, margin_s: float = 1800.0, own_margin_s: float = 7200.0):
        if not margin_s >= 0:
            raise ValueError(f"margin_s must be >= 0, got {margin_s}")
        if not own_margin_s >= margin_s:
            raise ValueError(f"own_margin_s must be >= margin_s ({margin_s}), got {own_margin_s}")
        self.margin_s, self.own_margin_s = margin_s, own_margin_s

    def pre_filter(self, state: CycleState, jobs: Sequence[JobRequest]) -> None:
        state.notes[PRESSURE] = Pressure.of(state, jobs, self.margin_s, self.own_margin_s)


def pressure_of(state: CycleState) -> Pressure | None:
    """The cycle's pressure (None: the profile has no ``QueuePressure``, or nothing in the queue can be at risk)."""
    return state.notes.get(PRESSURE)


class Pressure:
    """The queue as the replay sees it (arrays, one entry per job: the ``n_waiting`` waiting ones, then the
    expected ones), with the deferrals booked so far this cycle, and how many jobs the replay puts at risk
    (``at_risk``)."""

    def __init__(self, now_s: float, zones: tuple[str, ...], free: np.ndarray, ends: tuple[np.ndarray, ...],
                 index: dict[str, int], queue: tuple[np.ndarray, ...], margin_s: float, own_margin_s: float,
                 n_waiting: int):
        self.now_s, self.zones, self.free, self.ends = now_s, zones, free, ends
        self.index, self.queue, self.margin_s, self.own_margin_s = index, queue, margin_s, own_margin_s
        self.n_waiting = n_waiting
        waiting_at_risk, self.at_risk, _ = replay(now_s, free, *ends, *queue, margin_s, n_waiting, -1, 0.0)
        #: the replay has waiting jobs at risk already: the queue goes in order of latest start
        self.tight = waiting_at_risk > 0

    @classmethod
    def of(cls, state: CycleState, jobs: Sequence[JobRequest], margin_s: float,
           own_margin_s: float) -> Pressure | None:
        snapshot, cluster, now = state.snapshot, state.cluster, state.now_s
        all_zones = snapshot.zones()
        backlog = snapshot.backlog
        offered = [j for j in jobs if j.deadline_s is not None and j.expected_duration_s]
        free = {z: cluster.free_gpus(z) for z in all_zones}
        if _fits_at_once(backlog, offered, free, all_zones):
            return None  # the waiting jobs never wait for room: the arrivals expected alone do not press the queue
        expected = snapshot.expected
        bit = {z: 1 << i for i, z in enumerate(all_zones)}
        every = (1 << len(all_zones)) - 1
        rows = [(d.job_id, max(d.ready_s, now), d.deadline_s - d.work_s, d.gpus, d.work_s, d.zones) for d in backlog]
        rows += [(j.job_id, now, j.deadline_s - j.expected_duration_s, j.gpus, j.expected_duration_s, j.zones)
                 for j in offered]
        index = {row[0]: k for k, row in enumerate(rows)}
        rows += [(d.job_id, max(d.ready_s, now), d.deadline_s - d.work_s, d.gpus, d.work_s, d.zones)
                 for d in expected]
        queue = (np.array([r[1] for r in rows]), np.array([r[2] - margin_s for r in rows]),
                 np.array([r[3] for r in rows], dtype=np.int64), np.array([r[4] for r in rows]),
                 np.array([sum(bit.get(z, 0) for z in r[5]) if r[5] else every for r in rows], dtype=np.int64))
        running = [r for r in snapshot.running if r.job_id not in state.stopped and r.zone in bit]
        ends = (np.array([np.inf if r.end_s is None else r.end_s for r in running]),
                np.array([all_zones.index(r.zone) for r in running], dtype=np.int64),
                np.array([r.gpus for r in running], dtype=np.int64))
        return cls(now, all_zones, np.array([free[z] for z in all_zones], dtype=np.int64), ends, index, queue,
                   margin_s, own_margin_s, len(index))

    def defer(self, job: JobRequest, ready_s: float, run_until_s: float | None = None,
              zone: str | None = None) -> bool:
        """Book ``job`` waiting until ``ready_s`` (after running in ``zone`` from now to ``run_until_s``, if given)
        instead of starting now, unless that puts more jobs at risk; False (nothing booked): it should start now."""
        k = self.index.get(job.job_id)
        if k is None:
            return True  # no deadline: nothing of it to weigh
        ready, latest, gpus, work, mask = (a.copy() for a in self.queue)
        free, ends = self.free, self.ends
        if run_until_s is not None and zone in self.zones and run_until_s > self.now_s:
            z = self.zones.index(zone)
            done_s = min(run_until_s - self.now_s, work[k])
            work[k] -= done_s
            latest[k] += done_s  # the rest may start that much later
            free = free.copy()
            free[z] -= job.gpus
            ends = (np.append(ends[0], run_until_s), np.append(ends[1], z), np.append(ends[2], job.gpus))
        ready[k] = max(ready_s, self.now_s)
        queue = (ready, latest, gpus, work, mask)
        # latest[k] is its latest start less margin_s
        watch_by_s = latest[k] + self.margin_s - self.own_margin_s
        _, at_risk, itself = replay(self.now_s, free, *ends, *queue, self.margin_s, self.n_waiting, k, watch_by_s)
        if at_risk > self.at_risk or itself:
            return False
        self.free, self.ends, self.queue, self.at_risk = free, ends, queue, at_risk
        return True


def _fits_at_once(backlog, offered: list[JobRequest], free: dict[str, int], all_zones: tuple[str, ...]) -> bool:
    """Whether every waiting job fits in the free GPUs at once: per set of zones the jobs are confined to, their
    GPUs against the free ones there (a job then never waits for room, whatever the others do)."""
    wanted: dict[frozenset[str], int] = {}
    by_zones = getattr(backlog, "gpus_by_zones", None)
    pairs = list(by_zones.items()) if by_zones is not None else [(d.zones, d.gpus) for d in backlog]
    for zones, gpus in pairs + [(j.zones, j.gpus) for j in offered]:
        key = frozenset(zones or all_zones)
        wanted[key] = wanted.get(key, 0) + gpus
    if not wanted:
        return True
    return all(sum(g for s, g in wanted.items() if s <= key) <= sum(free.get(z, 0) for z in key) for key in wanted)


@njit(cache=True, nogil=True)
def replay(now_s: float, free0: np.ndarray, end_s: np.ndarray, end_zone: np.ndarray, end_gpus: np.ndarray,
           ready_s: np.ndarray, latest_s: np.ndarray, gpus: np.ndarray, work_s: np.ndarray, mask: np.ndarray,
           margin_s: float, n_waiting: int, watch: int, watch_by_s: float) -> tuple[int, int, bool]:
    """How many jobs list scheduling would start after ``latest_s`` (their latest start less ``margin_s``), of those
    not due already (a job due now starts now if it can, and no deferral changes that): from ``now_s``, whenever a
    job becomes ready (``ready_s``) or a running one ends (``end_s``, in ``end_zone``, giving back ``end_gpus``),
    the ready jobs in order of ``latest_s`` (those past their latest start last) each take ``gpus`` in the allowed
    zone (bit i of ``mask``: zone i) with most free GPUs, for ``work_s``; ``free0``: each zone's free GPUs now.
    Jobs that never fit are left out. Returns those of the first ``n_waiting`` jobs (the waiting ones) at risk,
    all of them, and whether job ``watch`` starts after ``watch_by_s``.

    The running jobs' ends and the ready times are walked in order, the ends of the jobs started in the replay
    kept in a heap, and the start loop runs only while some ready job waits for room and some GPU is free, over
    the ready jobs that wait (kept in order), not the whole queue."""
    free = free0.copy()
    n_run, n = len(end_s), len(ready_s)
    n_zones = len(free)
    by_end = np.argsort(end_s)
    by_ready = np.argsort(ready_s, kind="mergesort")
    # the jobs already late go after those that can still be on time, as a pressed queue sorts them
    late = latest_s + margin_s < now_s - 1e-6
    on_time, past = np.nonzero(~late)[0], np.nonzero(late)[0]
    order = np.concatenate((on_time[np.argsort(latest_s[on_time], kind="mergesort")],
                            past[np.argsort(latest_s[past], kind="mergesort")]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    st_zone = np.empty(n, dtype=np.int64)
    ends = [(np.inf, -1)]  # a heap of (end, job) of the jobs started in the replay (the sentinel never pops)
    pending = [np.int64(0) for _ in range(0)]  # the ranks of the ready jobs that wait, in order
    p_run, p_ready, left, at_risk, t = 0, 0, n, 0, now_s
    free_total = free.sum()
    waiting_at_risk, watched = 0, False
    while left > 0:
        while p_run < n_run and end_s[by_end[p_run]] <= t:
            e = by_end[p_run]
            free[end_zone[e]] += end_gpus[e]
            free_total += end_gpus[e]
            p_run += 1
        while ends[0][0] <= t:
            j = heapq.heappop(ends)[1]
            free[st_zone[j]] += gpus[j]
            free_total += gpus[j]
        while p_ready < n and ready_s[by_ready[p_ready]] <= t:
            r = rank[by_ready[p_ready]]
            at = len(pending)
            while at > 0 and pending[at - 1] > r:  # (most come in about the order they are taken)
                at -= 1
            pending.insert(at, r)
            p_ready += 1
        if pending and free_total > 0:
            kept = [np.int64(0) for _ in range(0)]
            for r in pending:
                j = order[r]
                best, most = -1, -1
                if free_total > 0:
                    for z in range(n_zones):
                        if (mask[j] >> z) & 1 and free[z] > most:
                            best, most = z, free[z]
                if best < 0 or most < gpus[j]:
                    kept.append(r)
                    continue
                free[best] -= gpus[j]
                free_total -= gpus[j]
                left -= 1
                st_zone[j] = best
                heapq.heappush(ends, (t + work_s[j], j))
                if t > latest_s[j] + 1e-6 and latest_s[j] + margin_s > now_s:
                    at_risk += 1
                    if j < n_waiting:
                        waiting_at_risk += 1
                if j == watch and t > watch_by_s + 1e-6:
                    watched = True
            pending = kept
        nxt = end_s[by_end[p_run]] if p_run < n_run else np.inf
        if p_ready < n and ready_s[by_ready[p_ready]] < nxt:
            nxt = ready_s[by_ready[p_ready]]
        if ends[0][0] < nxt:
            nxt = ends[0][0]
        if nxt == np.inf:
            break  # what is left never fits
        t = nxt
    return waiting_at_risk, at_risk, watched
