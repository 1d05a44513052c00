"""A scheduling profile run as a pipeline of plugins, after the Kubernetes scheduling framework.

One cycle, for one snapshot::

    PreFilter (all waiting jobs: compute per-job scratch, e.g. carbon plans and holds, into the CycleState)
    QueueSort (who goes first when room is scarce)
    for each job:   Preempt (a job that is due may suspend running ones that can afford a pause)
                    -> Filter (which zones could take it now?) -> Score (normalised 0..100, weighted) -> best zone
                    -> Permit (start now, or wait on purpose for a better moment)
                    -> CapChooser (at which power cap) -> Reserve (take the GPUs and the power in the CycleState)

Plugins answer with a ``Status`` (code, plugin name, reason), never with exceptions. A policy is a ``Profile``:
a name and the plugin instances at each extension point.

The state lives one cycle, except for holds (``policies.snapshot.Hold``): room a waiting job keeps for later. A
job's hold leaves with its ``Wait`` and comes back in the snapshots that do not offer the job again, so a caller
that offers only some jobs per cycle (the simulator) still has every hold respected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, Sequence

from policies import gang
from policies.decisions import Decision, Start, Suspend, Wait
from policies.snapshot import FULL_POWER, CapStep, Hold, JobRequest, RunningJob, Snapshot
from policies.status import Code, Status

MAX_SCORE = 100.0
DUE_EPS_S = 1e-6  # "due now" allows for float sums of event times
#: The plugin named in the framework's own waits for power (the budget is a hard limit it checks after the cap is chosen).
BUDGET = "PowerBudget"


class ClusterView:
    """Free GPUs per zone and node during one cycle; ``take`` reserves them so later jobs see less room.

    Jobs are placed as gangs (``policies.gang``): K GPUs on each of N / K nodes of one zone. A pool without nodes
    counts as one node named after its zone and takes any job its free count has room for.

    layouts: a memo the caller keeps from cycle to cycle (``ProfilePolicy``): a cluster of pools only (the
    simulator's) has the same nodes and sizes in every snapshot, so what follows from them alone (node sizes,
    which zones could ever take a job) is worked out once, not per cycle.
    """

    def __init__(self, snapshot: Snapshot, layouts: dict | None = None):
        # free[zone][node] -> free GPU ids (listed GPUs) or a count (pools)
        self.free: dict[str, dict[str, list[str] | int]] = {}
        self.node_of: dict[str, str] = {}  # listed GPU id -> its node
        layout = key = None
        if layouts is not None and not snapshot.gpus:
            key = tuple((p.zone, p.gpus, p.node_ids) for p in snapshot.pools)
            layout = layouts.get(key)
        if layout is None:
            layout = _Layout()
            if key is not None:
                if len(layouts) > 16:
                    layouts.clear()
                layouts[key] = layout
            sizes = layout.node_sizes
            for gpu in snapshot.gpus:
                zone_sizes = sizes.setdefault(gpu.zone, {})
                zone_sizes[gpu.node_id] = zone_sizes.get(gpu.node_id, 0) + 1
            for pool in snapshot.pools:
                if pool.node_ids:
                    sizes.setdefault(pool.zone, {}).update(dict.fromkeys(pool.node_ids, pool.gpus_per_node))
                else:
                    sizes.setdefault(pool.zone, {})[pool.zone] = pool.gpus
                    layout.pooled.add(pool.zone)
            layout.largest_node = {zone: max(s.values()) for zone, s in sizes.items()}
            layout.size = {zone: sum(s.values()) for zone, s in sizes.items()}  # GPUs, busy or not
        self.node_sizes: dict[str, dict[str, int]] = layout.node_sizes  # zone -> node -> its GPUs, busy or not
        self.pooled: set[str] = layout.pooled  # zones that are pools without nodes
        self.largest_node: dict[str, int] = layout.largest_node
        self.size: dict[str, int] = layout.size
        self._possible = layout.possible
        free = self.free
        for gpu in snapshot.gpus:
            ids = free.setdefault(gpu.zone, {}).setdefault(gpu.node_id, [])
            if not gpu.busy:
                ids.append(gpu.gpu_id)
            self.node_of[gpu.gpu_id] = gpu.node_id
        for pool in snapshot.pools:
            if pool.node_ids:
                free.setdefault(pool.zone, {}).update(zip(pool.node_ids, pool.free_by_node))
            else:
                free.setdefault(pool.zone, {})[pool.zone] = pool.free_gpus
        # the most free GPUs on one node of each zone, and on all of them: asked for every job and zone, changed by
        # take() and release()
        self._most_free: dict[str, int] = {}
        self._free_total: dict[str, int] = {}
        for zone, nodes in free.items():
            if len(nodes) == 1:  # a pool without nodes
                for count in nodes.values():
                    count = _count(count)
                    self._most_free[zone] = self._free_total[zone] = count
            else:
                counts = list(map(_count, nodes.values()))
                self._most_free[zone], self._free_total[zone] = max(counts, default=0), sum(counts)

    def fits(self, zone: str, gpus: int, gpus_per_node: int | None = None) -> bool:
        """Whether ``zone`` has room now for a job of ``gpus`` GPUs in its gang shape."""
        if self._most_free.get(zone, 0) >= gpus and (gpus_per_node is None or gpus_per_node == gpus
                                                     or zone in self.pooled):
            return True  # on one node (the first shape of a job that leaves its shape open)
        if zone in self.pooled:
            return False
        return self.per_node(zone, gpus, gpus_per_node) is not None

    def per_node(self, zone: str, gpus: int, gpus_per_node: int | None = None) -> int | None:
        """The GPUs per node a job would take in ``zone`` now (``policies.gang.fit``); None: no room."""
        nodes = self.free.get(zone)
        if not nodes:
            return None
        if zone in self.pooled:
            return gpus if _count(nodes[zone]) >= gpus else None
        return gang.fit(map(_count, nodes.values()), gpus, gpus_per_node)

    def possible(self, zone: str, gpus: int, gpus_per_node: int | None = None) -> bool:
        """Whether ``zone`` could ever take the job: enough nodes of its shape, busy or not."""
        largest = self.largest_node.get(zone, 0)
        if largest >= gpus and (gpus_per_node is None or gpus_per_node == gpus or zone in self.pooled):
            return True
        if zone in self.pooled or not largest:
            return False
        return gang.fit(self.node_sizes[zone].values(), gpus, gpus_per_node) is not None

    def possible_zones(self, zones: tuple[str, ...], gpus: int, gpus_per_node: int | None = None) -> tuple[str, ...]:
        """The zones of ``zones`` that could ever take the job (``possible``), in their order."""
        key = (zones, gpus, gpus_per_node)
        found = self._possible.get(key)
        if found is None:
            if len(self._possible) > 4096:
                self._possible.clear()
            found = self._possible[key] = tuple(z for z in zones if self.possible(z, gpus, gpus_per_node))
        return found

    def free_gpus(self, zone: str) -> int:
        return self._free_total.get(zone, 0)

    def free_counts(self, zone: str) -> dict[str, int]:
        """Free GPUs per node of ``zone``."""
        return {node: _count(free) for node, free in self.free.get(zone, {}).items()}

    def choose(self, zone: str, gpus: int, gpus_per_node: int | None = None) -> tuple[tuple[str, int], ...]:
        """The nodes ``take`` would reserve now, each with its GPU count (rank 0's node first); empty: no room."""
        k = self.per_node(zone, gpus, gpus_per_node)
        if k is None:
            return ()
        if zone in self.pooled:
            return ((zone, gpus),)
        return tuple((node, k) for node in gang.first_nodes(self.free_counts(zone), gpus, k))

    def take(self, zone: str, gpus: int, gpus_per_node: int | None = None) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Reserve room for a job in ``zone``, on the first nodes in listed order that fit its shape: per node
        (rank 0's first) its id and the GPU ids taken there (empty on a pool)."""
        nodes = self.free[zone]
        placement = []
        for node_id, k in self.choose(zone, gpus, gpus_per_node):
            free = nodes[node_id]
            if isinstance(free, int):
                nodes[node_id] = free - k
                placement.append((node_id, ()))
            else:
                placement.append((node_id, tuple(free[:k])))
                del free[:k]
        if not placement:
            raise ValueError(f"zone {zone} has no room for {gpus} GPUs")  # callers check fits() first
        self._most_free[zone] = max(map(_count, nodes.values()))
        self._free_total[zone] -= gpus
        return tuple(placement)

    def held_by(self, job: RunningJob) -> dict[str, int]:
        """How many GPUs a running job holds on each of its nodes."""
        if job.gpu_ids:
            held: dict[str, int] = {}
            for gpu_id in job.gpu_ids:
                node_id = self.node_of.get(gpu_id, job.node_id)
                held[node_id] = held.get(node_id, 0) + 1
            return held
        if job.nodes:
            return dict.fromkeys(job.nodes, job.gpus // len(job.nodes))
        return {job.node_id: job.gpus}

    def release(self, job: RunningJob) -> None:
        """Give back the GPUs of a job suspended during the cycle, on every node of its gang."""
        nodes = self.free.setdefault(job.zone, {})
        if job.gpu_ids:
            for gpu_id in job.gpu_ids:
                node_id = self.node_of.get(gpu_id, job.node_id)
                free = nodes.get(node_id)
                nodes[node_id] = [gpu_id] if free is None else free + [gpu_id]
        else:
            for node_id, gpus in self.held_by(job).items():
                nodes[node_id] = nodes.get(node_id, 0) + gpus
        self._most_free[job.zone] = max(map(_count, nodes.values()))
        self._free_total[job.zone] = sum(map(_count, nodes.values()))


def _count(free: list[str] | int) -> int:
    return free if isinstance(free, int) else len(free)


class _Layout:
    """What a ``ClusterView`` derives from the cluster's nodes and sizes alone (see its ``layouts``)."""

    def __init__(self) -> None:
        self.node_sizes: dict[str, dict[str, int]] = {}
        self.pooled: set[str] = set()
        self.largest_node: dict[str, int] = {}
        self.size: dict[str, int] = {}
        self.possible: dict[tuple, tuple[str, ...]] = {}  # (zones, gpus, gpus_per_node) -> the possible zones


class Started(NamedTuple):
    """A job started during the cycle, as later jobs' plans must count it: where, until when, how much, and on
    which nodes (each with its GPU count)."""

    zone: str
    end_s: float
    gpus: int
    draw_w: float
    nodes: tuple[tuple[str, int], ...] = ()


@dataclass
class CycleState:
    """Scratch shared by the plugins during one cycle: the snapshot, the room left, and per-job notes.

    holds: the room waiting jobs keep (the snapshot's, then those plugins make for the jobs offered now; a job's
    hold goes when it starts, and goes back to the caller with its ``Wait``). started: the jobs started so far;
    stopped: the ids of the running jobs suspended so far.
    """

    snapshot: Snapshot
    cluster: ClusterView
    budget_left_w: float | None
    notes: dict[tuple, Any] = field(default_factory=dict)  # (plugin, job id, ...) -> anything
    suspended: list[Suspend] = field(default_factory=list)  # running jobs suspended this cycle, in order
    holds: dict[str, Hold] = field(default_factory=dict)  # job id -> its hold
    started: list[Started] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)
    _zones: tuple[str, ...] | None = field(default=None, repr=False)

    @property
    def now_s(self) -> float:
        return self.snapshot.now_s

    @property
    def zones(self) -> tuple[str, ...]:
        """The snapshot's zones (``Snapshot.zones``), worked out once per cycle."""
        if self._zones is None:
            self._zones = self.snapshot.zones()
        return self._zones


def steps_of(job: JobRequest) -> tuple[CapStep, ...]:
    """The caps a job may run at (full power only when it has no power profile)."""
    return job.power_profile.steps if job.power_profile else (FULL_POWER,)


def job_draw_w(job: JobRequest, step: CapStep = FULL_POWER) -> float:
    """What a job draws on all its GPUs at ``step`` (W); 0 when its power is unknown."""
    return job.gpus * (job.power_w or 0.0) * step.power_fraction


def latest_start_s(job: JobRequest) -> float | None:
    """The latest moment a job can start at full speed and meet its deadline (None: no deadline or no estimate)."""
    if job.deadline_s is None or not job.expected_duration_s:
        return None
    return job.deadline_s - job.expected_duration_s


def is_due(job: JobRequest, now_s: float) -> bool:
    """Whether a job with a deadline must start now, at full speed, to meet it (its slack is gone)."""
    latest_s = latest_start_s(job)
    return latest_s is not None and now_s >= latest_s - DUE_EPS_S


def _due_at(job: JobRequest, now_s: float) -> float | None:
    """When a job that still has slack falls due (None: no deadline, or it is due already)."""
    return None if is_due(job, now_s) else latest_start_s(job)


class PreFilterPlugin(Protocol):
    name: str

    def pre_filter(self, state: CycleState, jobs: Sequence[JobRequest]) -> None: ...


class QueueSortPlugin(Protocol):
    name: str

    def sort(self, state: CycleState, jobs: Sequence[JobRequest]) -> list[JobRequest]: ...


class FilterPlugin(Protocol):
    name: str

    def filter(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> tuple[tuple[str, ...], Status]:
        """The zones that pass, and the status that explains the ones that did not (SUCCESS if all passed)."""


class ScorePlugin(Protocol):
    name: str

    def score(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> dict[str, float]:
        """A score per zone in ``[0, MAX_SCORE]``, higher is better (see ``normalize_lower_is_better``)."""


class PreemptPlugin(Protocol):
    name: str

    def preempt(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> None:
        """Before ``job`` is placed: suspend running jobs to make room or power for it, if it needs them (recorded
        in ``CycleState.suspended``, with their GPUs and power given back to the cycle)."""


class PermitPlugin(Protocol):
    name: str

    def permit(self, state: CycleState, job: JobRequest, zone: str) -> Status:
        """SUCCESS to start now in ``zone``; WAIT (with ``retry_at_s``) to hold the job back on purpose."""


class CapPlugin(Protocol):
    name: str

    def choose(self, state: CycleState, job: JobRequest, zone: str) -> tuple[CapStep, float | None, str]:
        """The cap to start at, when to stop and ask again (interruptible jobs; None = run to the end), and why."""


def normalize_lower_is_better(raw: dict[str, float]) -> dict[str, float]:
    """Map raw costs to scores: the lowest cost gets MAX_SCORE, the highest 0 (all equal: all MAX_SCORE)."""
    if not raw:
        return {}
    lo, hi = min(raw.values()), max(raw.values())
    if hi - lo <= 0:
        return {zone: MAX_SCORE for zone in raw}
    return {zone: MAX_SCORE * (hi - cost) / (hi - lo) for zone, cost in raw.items()}


@dataclass(frozen=True)
class Profile:
    """A named policy: the plugins at each extension point; ``scorers`` pair a plugin with its weight."""

    name: str
    queue_sort: QueueSortPlugin
    cap_chooser: CapPlugin
    filters: tuple[FilterPlugin, ...] = ()
    scorers: tuple[tuple[ScorePlugin, float], ...] = ()
    pre_filters: tuple[PreFilterPlugin, ...] = ()
    permits: tuple[PermitPlugin, ...] = ()
    preemptors: tuple[PreemptPlugin, ...] = ()


class ProfilePolicy:
    """A policy that runs a ``Profile``'s plugins over each snapshot (pure: state lives one cycle)."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self.name = profile.name
        self._layouts: dict = {}  # ClusterView's memo of the cluster's layout (pure: derived from snapshots)

    def decide(self, snapshot: Snapshot) -> list[Decision]:
        state = CycleState(snapshot, ClusterView(snapshot, self._layouts),
                           None if snapshot.power_budget_w is None else snapshot.power_budget_w - snapshot.power_draw_w,
                           holds={h.job_id: h for h in snapshot.holds})
        jobs = list(snapshot.waiting)
        for plugin in self.profile.pre_filters:
            plugin.pre_filter(state, jobs)
        all_zones = state.zones
        decisions: list[Decision] = []
        for job in self.profile.queue_sort.sort(state, jobs):
            decision = self._decide_one(state, job, job.zones or all_zones)
            if state.suspended:
                decisions.extend(state.suspended)  # before the start they make room for
                state.stopped.update(s.job_id for s in state.suspended)
                state.suspended.clear()
            hold = state.holds.pop(job.job_id, None)
            if isinstance(decision, Wait) and hold is not None:
                state.holds[job.job_id] = hold
                retry_at_s = decision.retry_at_s
                if hold.start_s > state.now_s and (retry_at_s is None or retry_at_s > hold.start_s):
                    retry_at_s = hold.start_s  # from then on it starts as soon as it can
                decision = replace(decision, hold=hold, status=replace(decision.status, retry_at_s=retry_at_s))
            decisions.append(decision)
        return decisions

    def _decide_one(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> Decision:
        for plugin in self.profile.preemptors:
            plugin.preempt(state, job, zones)
        for plugin in self.profile.filters:
            zones, status = plugin.filter(state, job, zones)
            if not zones:
                # offered again when room frees and, where it may then preempt, when its slack runs out
                due_at_s = _due_at(job, state.now_s) if self.profile.preemptors else None
                return Wait(job.job_id, replace(status, retry_at_s=status.retry_at_s or due_at_s))
        zone = self._best_zone(state, job, zones)
        for plugin in self.profile.permits:
            status = plugin.permit(state, job, zone)
            if not status.ok:
                return Wait(job.job_id, status)
        step, until_s, why = self.profile.cap_chooser.choose(state, job, zone)
        draw_w = job_draw_w(job, step)
        if state.budget_left_w is not None and draw_w > state.budget_left_w + 1e-9:
            # the budget is a hard limit: filters admit a job whose lowest cap fits, but the chooser may need more
            return Wait(job.job_id, Status(Code.UNSCHEDULABLE, BUDGET,
                                           f"waiting for power: the budget has {max(state.budget_left_w, 0):.0f} W "
                                           f"left, the job draws {draw_w:.0f} W at a {step.cap_fraction:.0%} cap"))
        due_at_s = _due_at(job, state.now_s)
        if state.budget_left_w is not None and due_at_s is not None \
                and state.now_s + job.expected_duration_s / step.speed > job.deadline_s + DUE_EPS_S:
            # the budget leaves only caps too slow for its deadline: while it has slack, wait for power rather
            # than start late for sure (when it falls due it may preempt)
            return Wait(job.job_id, Status(Code.UNSCHEDULABLE, BUDGET,
                                           f"waiting for power: at the {step.cap_fraction:.0%} cap the budget allows "
                                           "now the job would miss its deadline", retry_at_s=due_at_s))
        placement = state.cluster.take(zone, job.gpus, job.gpus_per_node)
        if state.budget_left_w is not None:
            state.budget_left_w -= draw_w
        work_s = job.expected_duration_s
        end_s = state.now_s + work_s / step.speed if work_s is not None else float("inf")
        per_node = job.gpus // len(placement)
        state.started.append(Started(zone, end_s if until_s is None else min(end_s, until_s), job.gpus, draw_w,
                                     tuple((node_id, per_node) for node_id, _ in placement)))
        gpu_ids = tuple(gpu_id for _, ids in placement for gpu_id in ids)
        cap_w = _cap_w(state.snapshot, gpu_ids, step)
        return Start(job.job_id, placement[0][0], zone, gpu_ids, power_cap_w=cap_w, reason=why,
                     cap_fraction=step.cap_fraction, until_s=until_s, nodes=placement if len(placement) > 1 else ())

    def _best_zone(self, state: CycleState, job: JobRequest, zones: tuple[str, ...]) -> str:
        if len(zones) == 1 or not self.profile.scorers:
            return zones[0]
        total = dict.fromkeys(zones, 0.0)
        for plugin, weight in self.profile.scorers:
            for zone, score in plugin.score(state, job, zones).items():
                total[zone] += weight * score
        return max(zones, key=total.__getitem__)  # max() keeps the first of equals: listed order breaks ties


def _cap_w(snapshot: Snapshot, gpu_ids: tuple[str, ...], step: CapStep) -> float | None:
    """The cap in watts when the GPUs' maximum power is known and the cap is below full power."""
    if step.cap_fraction >= 1.0 or not gpu_ids:
        return None
    max_w = [g.max_power_w for g in snapshot.gpus if g.gpu_id in gpu_ids]
    return step.cap_fraction * min(max_w) if max_w and all(max_w) else None
