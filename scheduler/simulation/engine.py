"""The event-driven simulation: a virtual clock and cluster driving a policy through the scheduling core the daemon
shares (``scheduler.core``): the same snapshot, the same checks on every decision.

Events sit in a heap: arrivals, completions, planned stops of interruptible jobs (``Start.until_s``), and the
retry times of jobs a policy deferred (``Wait.retry_at_s``). At each event time the driver offers the policy only
the jobs whose situation changed (arrived, stopped, due for a retry, or waiting for room where room was freed), so
a year of 100,000 jobs costs a few hundred thousand small decision rounds, not one per job per step.

A zone is a pool without node boundaries, or nodes of equal size (``inputs.Zone``); on nodes, each segment of a
job records the nodes its gang ran on, each holding ``gpus / len(nodes)`` of its GPUs.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from collections.abc import Sequence

from policies.arrivals import ArrivalHistory
from policies.backlog import Backlog, Demand
from policies.decisions import Decision, Start, Suspend, Wait
from policies.registry import Policy
from policies.snapshot import CapStep, Hold, JobRequest, PowerProfile, RunningJob, Snapshot, ZonePool
from scheduler.core import SchedulingCore
from scheduler.errors import PolicyViolation
from scheduler.simulation.forecasts import TraceForecast
from scheduler.simulation.inputs import Cluster, Job

# Event kinds, in the order they are handled at one instant: room is freed before anyone asks for it.
_STOP, _ARRIVE, _RETRY = 0, 1, 2
WORK_EPS_S = 1e-6


@dataclass
class Segment:
    """A stretch of a job's run in one zone at one cap (``end_s`` None while it runs), on ``nodes`` (rank 0's
    first; empty in a pool without nodes)."""

    start_s: float
    zone: str
    step: CapStep
    end_s: float | None = None
    nodes: tuple[str, ...] = ()


@dataclass
class JobRun:
    """The simulator's state of one job."""

    job: Job
    profile: PowerProfile | None
    remaining_s: float  # work left, in seconds at full speed
    segments: list[Segment] = field(default_factory=list)
    token: int = 0  # bumped on every change, so stale events are ignored
    completed_s: float | None = None
    running_since_s: float = 0.0  # start of the current stretch (a resumed segment may begin earlier)
    stop_s: float = 0.0  # when the current stretch ends (completion or planned suspension)
    # the last request built: a job is offered again and again while it waits, and only its remaining work and
    # first start change it
    _request: JobRequest | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.deadline_s = self.job.effective_deadline_s  # read on every wake-up: the job's property computes it

    def request(self) -> JobRequest:
        started_s = self.segments[0].start_s if self.segments else None
        last = self._request
        if last is not None and last.expected_duration_s == self.remaining_s and last.started_s == started_s:
            return last
        job = self.job
        self._request = JobRequest(job_id=job.job_id, gpus=job.gpus, submitted_s=job.submit_s, zones=job.zones,
                                   deadline_s=self.deadline_s, interruptible=job.interruptible, kind=job.kind,
                                   expected_duration_s=self.remaining_s, power_w=job.power_w,
                                   power_profile=self.profile, started_s=started_s, gpus_per_node=job.gpus_per_node)
        return self._request


class Simulation:
    """One run of ``policy`` over ``jobs`` on ``cluster``, with ``forecast`` as what the policy may see."""

    def __init__(self, cluster: Cluster, jobs: list[Job], profiles: dict[str, PowerProfile], policy: Policy,
                 forecast: TraceForecast):
        self.cluster, self.policy, self.forecast = cluster, policy, forecast
        self.core = SchedulingCore(policy)
        self._now_s = 0.0  # the virtual time of the round being decided
        self.runs = [JobRun(j, profiles.get(j.profile) if j.profile else None, j.duration_s) for j in jobs]
        self._by_id = {r.job.job_id: i for i, r in enumerate(self.runs)}
        self.free = {z.name: z.gpus for z in cluster.zones}
        # zones with nodes: free GPUs per node, in the order of the zone's node_ids
        self._node_ids = {z.name: z.node_ids for z in cluster.zones if z.gpus_per_node is not None}
        self.node_free = {zone: dict.fromkeys(ids, cluster.zone(zone).gpus_per_node)
                          for zone, ids in self._node_ids.items()}
        self.draw_w = 0.0
        self.decision_rounds = 0
        self._heap: list[tuple[float, int, int, int, int]] = []  # (time, kind, seq, job index, token)
        self._seq = 0
        # waiting for room, in the order they started waiting: job index -> the zones it waits on (empty: any)
        self._blocked: dict[int, tuple[str, ...]] = {}
        self._blocked_gpus = 0  # the GPUs of the jobs in _blocked (kept by _block and _unblock)
        self._pools: dict[tuple[str, int], ZonePool] = {}  # the pools without nodes, by zone and free GPUs
        self._last_pools: tuple[tuple[int, ...], tuple[ZonePool, ...]] = ((), ())  # free GPUs per zone -> pools
        self._running: dict[int, None] = {}  # running now
        self._holds: dict[int, Hold] = {}  # the room waiting jobs keep, from their last Wait
        self.backlog = Backlog()  # the demand of the waiting jobs a round does not offer
        # the arrivals so far, from the first: what the policy expects of the next day (policies.arrivals)
        self.arrivals = ArrivalHistory(min((j.submit_s for j in jobs), default=0.0))

    def _push(self, t: float, kind: int, index: int) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, kind, self._seq, index, self.runs[index].token))

    def run(self) -> list[JobRun]:
        for i, run in enumerate(self.runs):
            self._push(run.job.submit_s, _ARRIVE, i)
        heap = self._heap
        while heap:
            now = heap[0][0]
            offered: list[int] = []
            freed: set[str] = set()  # zones where room was freed
            while heap and heap[0][0] == now:
                _, kind, _, index, token = heapq.heappop(heap)
                run = self.runs[index]
                if token != run.token:
                    continue
                if kind == _STOP:
                    freed.add(run.segments[-1].zone)
                    if not self._stop(run, now):
                        offered.append(index)
                else:
                    if kind == _ARRIVE:
                        self._arrived(run.job)
                    offered.append(index)
                    self._unblock(index)
            if freed and self._blocked:
                woken = self._woken(freed, now)
                offered.extend(woken)
                for index in woken:
                    self._unblock(index)
            if offered:
                self._decide(now, list(dict.fromkeys(offered)))
        return self.runs

    def _woken(self, freed: set[str], now: float) -> list[int]:
        """The jobs waiting for room in ``freed`` zones to offer again: every job that waits for room in all the
        zones it may use (the policy chooses among them). Of those that wait by choice for room in some of their
        zones only (a cleaner one) while others may have room: all of them while the queue is pressed (the jobs
        waiting for room want more GPUs than are free: the policy may then revoke a wait by choice, see
        ``policies.plugins.pressure``); else, without a power budget, as many as the free GPUs there have room for,
        in order of latest start, and every one that is due; the others would only be told again that they wait
        for that room."""
        runs, free = self.runs, self.free
        if self.cluster.budget_w is not None or self._blocked_gpus > sum(free.values()):
            return [i for i, zones in self._blocked.items() if not zones or not freed.isdisjoint(zones)]
        woken, by_choice = [], []
        n_zones = len(free)
        for index, zones in self._blocked.items():
            if not zones:
                woken.append(index)
            elif freed.isdisjoint(zones):
                continue
            elif len(zones) < (len(runs[index].job.zones) or n_zones):
                by_choice.append((runs[index].deadline_s - runs[index].remaining_s, index))
            else:
                woken.append(index)
        room = dict(free)
        for latest_s, index in sorted(by_choice):
            gpus = runs[index].job.gpus
            zone = max(self._blocked[index], key=room.__getitem__)
            if room[zone] >= gpus:
                room[zone] -= gpus
                woken.append(index)
            elif now >= latest_s - 1e-6:
                woken.append(index)
        return woken

    def _block(self, index: int, zones: tuple[str, ...]) -> None:
        """Keep a job waiting for room in ``zones`` (empty: any), in the order it first started waiting."""
        if index not in self._blocked:
            self._blocked_gpus += self.runs[index].job.gpus
        self._blocked[index] = zones

    def _unblock(self, index: int) -> None:
        if self._blocked.pop(index, None) is not None:
            self._blocked_gpus -= self.runs[index].job.gpus

    def _stop(self, run: JobRun, now: float) -> bool:
        """End the running segment at ``now``; True when the job is complete."""
        seg = run.segments[-1]
        seg.end_s = now
        self._running.pop(self._by_id[run.job.job_id], None)
        run.remaining_s -= (now - run.running_since_s) * seg.step.speed
        run.token += 1
        self.free[seg.zone] += run.job.gpus
        for node in seg.nodes:
            self.node_free[seg.zone][node] += run.job.gpus // len(seg.nodes)
        self.draw_w -= run.job.gpus * run.job.power_w * seg.step.power_fraction
        if run.remaining_s <= WORK_EPS_S * max(1.0, run.job.duration_s):
            run.remaining_s = 0.0
            run.completed_s = now
            return True
        return False

    def _decide(self, now: float, offered: list[int]) -> None:
        self.decision_rounds += 1
        self.forecast.now_s = now
        self._now_s = now
        free = tuple(self.free.values())
        if self._node_ids or free != self._last_pools[0]:  # else no job started or stopped since the last round
            pools = tuple(self._pool(z.name, z.gpus) if z.name not in self._node_ids else
                          ZonePool(z.name, z.gpus, self.free[z.name], self._node_ids[z.name],
                                   tuple(self.node_free[z.name].values()))
                          for z in self.cluster.zones)
            self._last_pools = (free, pools)
        pools = self._last_pools[1]
        for i in offered:
            self.backlog.discard(self.runs[i].job.job_id)  # offered: the policy derives its demand
        holds = ()
        if self._holds:
            offered_now = set(offered)
            holds = tuple(h for i, h in self._holds.items() if i not in offered_now)
        snapshot = Snapshot(now_s=now, waiting=tuple(self.runs[i].request() for i in offered), gpus=(), pools=pools,
                            forecast=self.forecast, power_budget_w=self.cluster.budget_w, power_draw_w=self.draw_w,
                            running=RunningView(self, now), holds=holds, backlog=self.backlog,
                            expected=self.arrivals.expected(now))
        self.core.run(snapshot, self)

    def _pool(self, zone: str, gpus: int) -> ZonePool:
        """A pool without nodes as it is now (the same few states recur all year: kept, not rebuilt)."""
        key = (zone, self.free[zone])
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = ZonePool(zone, gpus, key[1])
        return pool

    # --- the executor the scheduling core drives (scheduler.core.Executor) ---------------------------------

    def start(self, decision: Start, job: JobRequest, step: CapStep) -> None:
        index = self._by_id[decision.job_id]
        self._holds.pop(index, None)
        run, now = self.runs[index], self._now_s
        self.free[decision.zone] -= run.job.gpus
        nodes = ()
        if decision.zone in self._node_ids:
            nodes = tuple(node for node, _ in decision.placement)
            for node in nodes:
                self.node_free[decision.zone][node] -= run.job.gpus // len(nodes)
        self.draw_w += run.job.gpus * run.job.power_w * step.power_fraction
        last = run.segments[-1] if run.segments else None
        if (last is not None and last.end_s == now and last.zone == decision.zone and last.step == step
                and last.nodes == nodes):
            last.end_s = None  # resumed where it stopped, as it was: one uninterrupted segment
        else:
            run.segments.append(Segment(now, decision.zone, step, nodes=nodes))
        run.token += 1
        run.running_since_s = now
        self._running[index] = None
        end = now + run.remaining_s / step.speed
        if decision.until_s is not None and decision.until_s < end:
            end = max(decision.until_s, now)
        run.stop_s = end
        self._push(end, _STOP, index)

    def suspend(self, decision: Suspend, job: RunningJob) -> None:
        index = self._by_id[decision.job_id]
        if not self._stop(self.runs[index], self._now_s):
            self._block(index, ())  # waiting again: offered when room is freed
            self._wait_for(index, self._now_s)

    def wait(self, decision: Wait) -> None:
        index = self._by_id[decision.job_id]
        if decision.hold is not None:
            self._holds[index] = decision.hold
        else:
            self._holds.pop(index, None)
        self.runs[index].token += 1
        now = self._now_s
        if decision.retry_at_s is not None and decision.retry_at_s > now:
            self._push(decision.retry_at_s, _RETRY, index)
        if not decision.deferred or decision.retry_at_s is None or decision.retry_at_s <= now:
            self._block(index, decision.room_in)  # offered again when room is freed there
            self._wait_for(index, now)
        else:
            self._wait_for(index, decision.retry_at_s)

    def refuse(self, decision: Decision, violation: PolicyViolation) -> None:
        raise violation  # a simulation of a policy that breaks the rules means nothing

    def unanswered(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._block(self._by_id[job_id], ())
            self._wait_for(self._by_id[job_id], self._now_s)

    def _arrived(self, job: Job) -> None:
        """Record a job's submission for the forecast of arrivals (jobs without a deadline cannot be late)."""
        if job.deadline_s is not None:
            self.arrivals.record(Demand(job.job_id, job.zones, job.gpus, job.duration_s, job.deadline_s, job.submit_s))

    def _wait_for(self, index: int, ready_s: float) -> None:
        """Keep a waiting job's demand in the backlog, ready from ``ready_s`` (jobs without a deadline have none)."""
        run = self.runs[index]
        job = run.job
        if job.deadline_s is not None:
            self.backlog.put(Demand(job.job_id, job.zones, job.gpus, run.remaining_s, job.deadline_s, ready_s))


class RunningView(Sequence):
    """The jobs running at ``now_s`` as ``RunningJob``s, built only if a policy looks (most cycles never do)."""

    def __init__(self, sim: Simulation, now_s: float):
        self._sim, self._now_s = sim, now_s
        self._jobs: list[RunningJob] | None = None

    def _built(self) -> list[RunningJob]:
        if self._jobs is None:
            self._jobs = []
            for index in self._sim._running:
                run = self._sim.runs[index]
                job, seg = run.job, run.segments[-1]
                done_s = (self._now_s - run.running_since_s) * seg.step.speed
                self._jobs.append(RunningJob(job.job_id, seg.zone, seg.nodes[0] if seg.nodes else seg.zone, job.gpus,
                                             job.gpus * job.power_w * seg.step.power_fraction, job.interruptible,
                                             job.deadline_s, max(run.remaining_s - done_s, 0.0), end_s=run.stop_s,
                                             nodes=seg.nodes if len(seg.nodes) > 1 else ()))
        return self._jobs

    def __len__(self) -> int:
        return len(self._built())

    def __getitem__(self, i):
        return self._built()[i]
