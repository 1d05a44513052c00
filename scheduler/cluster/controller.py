"""The controller: a detached, named Ray actor that owns the GPU workers, the running jobs and their event log.

Because it is detached, running jobs survive a crash or upgrade of the daemon; a restarted daemon attaches by
name (``get_or_create_controller``) and reconciles with ``running()`` and the events it has not acknowledged.

Events (``Started``, ``Progress``, ``Finished``: the typed protocol of workers/events.py) arrive from the
workers through ``report``; the controller numbers them in its ``EventLog`` (``seq``, increasing from 1 for
each controller; ``info()["epoch"]`` changes when the controller is re-created) and keeps them until the daemon
acknowledges them, after committing. A job whose worker or node is lost gets a ``Finished`` event with exit
status ``lost``, made by the controller from the last power sample it saw.

``Controller`` is a plain class; ``get_or_create_controller`` applies ``ray.remote`` (style habit 9).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from scheduler.cluster.event_log import EventLog
from scheduler.cluster.gang import GangNode, GangRun
from scheduler.errors import ConfigError, ControllerError
from workers.events import ExitStatus, Finished, Progress, Started, WorkerEvent
from workers.kinds import builtin_kinds
from workers.meters.recorder import EnergyTotals, PowerSample
from workers.worker import WORKER_DEFAULTS, GpuWorker

log = logging.getLogger(__name__)

#: The controller actor's name and namespace; a restarted daemon finds it by these.
CONTROLLER_NAME = "wattsched-controller"
NAMESPACE = "wattsched"

#: Controller options, each with its default; worker options (workers.worker.WORKER_DEFAULTS) may be given too,
#: and are passed to every worker, except ``zone`` and ``logical_zone`` which come from the two below.
CONTROLLER_DEFAULTS: dict[str, Any] = {
    # Zone of the GPUs of a node without a wattsched.io/zone label.
    "default_zone": "DE",
    # Zones given round-robin to the logical GPUs of an unlabelled node (the embedded default); () for none.
    "logical_zones": (),
    # Seconds to wait for a new worker actor to come up (its GPU may still be held by someone else).
    "worker_start_timeout_s": 30.0,
    # Seconds to wait for a worker to answer a command (start, cancel, liveness probe).
    "worker_call_timeout_s": 30.0,
    # Seconds from the stop signal to SIGKILL for a job started without a grace of its own (the daemon always gives
    # the job's).
    "cancel_grace_s": 120.0,
    # Unacknowledged events kept at most; beyond it the oldest progress events are dropped (never started or
    # finished ones), so a daemon that stays away long loses power samples, not outcomes.
    "max_events": 100_000,
}
_WORKER_KEYS = set(WORKER_DEFAULTS) - {"zone", "logical_zone"}

#: The resource only the head node has (Ray's own, as Ray Serve uses it). A driver on a machine with several nodes
#: (ray.cluster_utils) attaches to any of them, so the driver's node is not the head's.
HEAD_NODE_RESOURCE = "node:__internal_head__"
#: Threads of the controller actor: long polls (fetch_events) each hold one while they wait.
MAX_CONCURRENCY = 32
#: Threads of a worker actor: cancel and describe must not wait behind each other.
WORKER_MAX_CONCURRENCY = 4
#: Seconds a stop for a job the controller does not run yet is kept, to be applied if the job starts meanwhile: a
#: daemon's cancel may overtake its own start_job (the controller serves calls on many threads).
EARLY_STOP_TTL_S = 120.0
#: Seconds of slack when the controller waits for its workers to stop their jobs, beyond the longest grace.
SHUTDOWN_SLACK_S = 5.0


@dataclass
class _Worker:
    worker_id: str
    node_id: str
    handle: Any
    describe_ref: Any = None  # describe() in flight while the actor comes up
    info: dict | None = None  # describe(), once the actor is up
    busy_job: str | None = None
    created_at: float = field(default_factory=time.monotonic)


@dataclass
class _Job:
    job_id: str
    run_id: str
    worker_ids: list[str]
    node_id: str
    submitted_at: float
    grace_s: float = 0.0  # from its stop signal to SIGKILL
    launched: bool = False  # its lead worker has taken it (a stop now goes to the worker)
    stop: str | None = None  # a stop asked before then: cancelled or suspended
    started: Started | None = None
    last_sample: PowerSample | None = None
    peak_power_w: float = 0.0
    progress: dict = field(default_factory=dict)
    gang: GangRun | None = None  # a job over several nodes: its nodes' events are combined into the job's

    @property
    def lead(self) -> str:
        """Rank 0's worker (a single-node job's only launcher)."""
        return self.worker_ids[0]

    @property
    def leads(self) -> list[str]:
        """The worker that runs each node's launcher, rank 0's node first."""
        return [n.lead for n in self.gang.nodes] if self.gang else [self.lead]


def check_options(options: dict | None) -> dict:
    """The options as a new dict; ConfigError naming the valid keys when one is unknown."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(CONTROLLER_DEFAULTS) - _WORKER_KEYS)
    if unknown:
        valid = sorted(set(CONTROLLER_DEFAULTS) | _WORKER_KEYS)
        raise ConfigError(f"unknown controller options {unknown}; valid ones: {valid}")
    return options


def _worker_options_of(given: dict, options: dict) -> dict:
    """What every new worker is given: the worker options among ``given``, and the controller's cancel grace."""
    worker_options = {k: v for k, v in given.items() if k in _WORKER_KEYS}
    worker_options.setdefault("cancel_grace_s", options["cancel_grace_s"])
    return worker_options


def _comparable(value: Any) -> Any:
    """A list and a tuple of the same zones are the same setting (options cross Ray and JSON as either)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


class Controller:
    """Owns one GPU worker per GPU of the cluster, starts and cancels jobs on them, and keeps their events."""

    def __init__(self, options: dict | None = None):
        options = check_options(options)
        self.options = {**CONTROLLER_DEFAULTS, **options}
        self._worker_options = _worker_options_of(options, self.options)
        self.epoch = uuid.uuid4().hex
        self.started_at = time.time()
        ctx = ray.get_runtime_context()
        self._name = ctx.get_actor_name() or CONTROLLER_NAME
        self._namespace = ctx.namespace or NAMESPACE
        self._lock = threading.RLock()
        self._events = EventLog(self._lock, self.options["max_events"])
        self._sync_lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._jobs: dict[str, _Job] = {}
        self._early_stops: dict[str, tuple[str, float]] = {}  # job id -> (outcome, monotonic time asked)
        # The nodes of a gang that lost a node, still stopping: lead worker -> (job id, run id, the node's workers),
        # held until the node's own Finished says its processes have ended.
        self._draining: dict[str, tuple[str, str, list[str]]] = {}

    def configure(self, options: dict | None = None) -> dict:
        """Apply a restarted daemon's options (the same keys as at creation; those not given take their defaults).

        The controller's own options apply at once; worker options and zones apply to workers created from now on
        (a node that joins or comes back): a worker keeps the options it was created with, because its zone is
        part of what running jobs and the scheduler's placement were decided on. Returns ``changed`` (key ->
        [old, new]) and ``workers_keeping_old`` (how many workers still run with the former options).
        """
        options = check_options(options)
        wanted = {**CONTROLLER_DEFAULTS, **options}
        worker_options = _worker_options_of(options, wanted)
        with self._lock:
            before = {**self.options, **self._worker_options}
            after = {**wanted, **worker_options}
            changed = {k: [before.get(k), after.get(k)] for k in sorted(set(before) | set(after))
                       if _comparable(before.get(k)) != _comparable(after.get(k))}
            self.options, self._worker_options = wanted, worker_options
            self._events.max_events = wanted["max_events"]
            keeping = len(self._workers) if changed else 0
        if changed:
            log.warning("controller options changed: %s; %d existing worker(s) keep their former options until "
                        "recreated", ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()),
                        keeping)
        return {"changed": changed, "workers_keeping_old": keeping}

    # --- workers -------------------------------------------------------------------------------------------

    def sync_workers(self) -> list[dict]:
        """Match the workers to the cluster: one per GPU of each alive node; drop those of dead nodes.

        Jobs on a dropped worker get a ``finished``/``lost`` event. Returns ``inventory()``.
        """
        with self._sync_lock:
            alive = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
            self._drop_lost_workers(alive)
            self._create_missing_workers(alive)
            self._describe_new_workers()
        return self.inventory()

    def inventory(self) -> list[dict]:
        """Each ready worker's ``describe()`` plus ``busy_job`` (the job it runs or is held for, or None)."""
        with self._lock:
            return [
                {**w.info, "busy_job": w.busy_job}
                for w in sorted(self._workers.values(), key=lambda w: w.worker_id)
                if w.info is not None
            ]

    def _drop_lost_workers(self, alive: dict[str, dict]) -> None:
        with self._lock:
            workers = list(self._workers.values())
        lost: dict[str, str] = {w.worker_id: f"node {w.node_id} is gone" for w in workers if w.node_id not in alive}
        probes = {w.handle.busy.remote(): w.worker_id for w in workers if w.node_id in alive and w.info}
        # A slow worker is not a dead one: only an actor error drops it; the next sync probes it again.
        ready = []
        if probes:
            ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=self.options["worker_call_timeout_s"])
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                lost[probes[ref]] = f"worker actor died: {exc}"
        for worker_id, reason in lost.items():
            self._drop_worker(worker_id, reason)

    def _drop_worker(self, worker_id: str, reason: str) -> None:
        with self._lock:
            worker = self._workers.pop(worker_id, None)
            if worker is None:
                return
            log.warning("dropping worker %s: %s", worker_id, reason)
            drained = self._draining.pop(worker_id, None)
            if drained is not None:  # a node still stopping after its gang's loss, now lost too
                self._free(drained[0], drained[2])
            job = self._jobs.get(worker.busy_job) if worker.busy_job else None
            if job is not None and worker_id in job.leads:
                stopping = self._stopping_nodes(job, worker_id)
                self._release(job, keep=[w for node in stopping for w in node.worker_ids])
                self._events.append(self._lost_event(job, f"{reason} (worker {worker_id})"))
                for node in stopping:  # a gang stops whole: the other nodes' launchers are told to stop
                    self._draining[node.lead] = (job.job_id, job.run_id, list(node.worker_ids))
                    self._workers[node.lead].handle.cancel.remote(job.job_id, "cancelled")
        try:
            ray.kill(worker.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it is usually dead already
            pass

    def _create_missing_workers(self, alive: dict[str, dict]) -> None:
        for node_id, node in alive.items():
            gpus = int(node.get("Resources", {}).get("GPU", 0))
            for k in range(gpus):
                worker_id = f"{node_id[:8]}-gpu{k}"
                with self._lock:
                    if worker_id in self._workers:
                        continue
                options = dict(self._worker_options)
                options["zone"] = self.options["default_zone"]  # the worker prefers its node's zone label
                zones = tuple(self.options["logical_zones"])
                options["logical_zone"] = zones[k % len(zones)] if zones else None
                handle = (
                    ray.remote(GpuWorker)
                    .options(
                        num_gpus=1,
                        num_cpus=0,
                        max_concurrency=WORKER_MAX_CONCURRENCY,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                    )
                    .remote(worker_id, self._name, self._namespace, options)
                )
                with self._lock:
                    self._workers[worker_id] = _Worker(worker_id, node_id, handle, handle.describe.remote())

    def _describe_new_workers(self) -> None:
        """Wait for workers still coming up, each at most worker_start_timeout_s after its creation."""
        with self._lock:
            pending = [w for w in self._workers.values() if w.info is None]
        for worker in pending:
            left = worker.created_at + self.options["worker_start_timeout_s"] - time.monotonic()
            try:
                info = ray.get(worker.describe_ref, timeout=max(0.0, left))
            except ray.exceptions.GetTimeoutError:
                log.warning("worker %s is not up yet (is its GPU held by another Ray task?)", worker.worker_id)
                continue
            except ray.exceptions.RayError as exc:
                self._drop_worker(worker.worker_id, f"worker failed to start: {exc}")
                continue
            with self._lock:
                worker.info = info
                worker.describe_ref = None

    # --- jobs ----------------------------------------------------------------------------------------------

    def start_job(
        self,
        job_id: str,
        run_id: str,
        kind: str,
        spec: dict,
        worker_ids: list[str],
        workdir: str,
        power_cap_w: float | None = None,
        speed: float = 1.0,
        attempt: int = 1,
        resuming: bool = False,
        launch: dict | None = None,
        placement: list[list[str]] | None = None,
    ) -> None:
        """Start a job on idle workers: on one node, or as a gang over several nodes of one zone.

        worker_ids: every worker of the job, rank 0's first. placement: the same workers node by node (rank 0's
        node first, as many on each), as the policy placed them; None groups ``worker_ids`` by node in order. On
        each node the first worker (its lead) runs all the node's processes with all its GPUs; the others are
        held. A gang's lead workers each get the node's rank, the node count and the rendezvous (rank 0's node
        address and a port free there), and meter their node; their events reach the daemon combined into one
        run's (``scheduler.cluster.gang``).

        Every worker of the job is reserved in one step under the controller's lock before any process starts:
        a worker anywhere unknown, not ready or busy refuses the whole start (never a partial start), and since
        reserving is one step, two gangs can never each hold part of what the other needs.

        power_cap_w: the GPUs' power cap (None: their default); speed: the job's expected pace under it (from its
        power profile), which logical GPUs impose on the job's processes. attempt: the run's number (1, 2, ...);
        resuming: an earlier run of the job was suspended, preempted or lost. launch: the job's launch as the
        store keeps it (``{"launch": "per-gpu" or "per-node", "stop_signal": "SIGTERM", "grace_s": 120, ...}``;
        None: those defaults, with the ``cancel_grace_s`` option as the grace).

        Returns once every lead worker has taken the job; its outcome arrives as events. A stop asked before then
        (``cancel_job``, even one that came before this call) is applied as soon as the job's processes exist.
        Raises ControllerError when a worker is unknown, busy, the placement is not one zone with as many
        workers on each node, or a lead refuses the job (the leads that took it are then stopped).
        """
        if not worker_ids or len(set(worker_ids)) != len(worker_ids):
            raise ControllerError(f"job {job_id}: give one or more distinct worker ids, got {worker_ids}")
        if placement is not None and [w for ids in placement for w in ids] != list(worker_ids):
            raise ControllerError(f"job {job_id}: placement {placement} does not list the workers {worker_ids}")
        launch = dict(launch or {})
        grace_s = float(launch["grace_s"]) if launch.get("grace_s") is not None else self.options["cancel_grace_s"]
        mode = launch.get("launch") or "per-gpu"
        with self._lock:
            if job_id in self._jobs:
                raise ControllerError(f"job {job_id} is already running (run {self._jobs[job_id].run_id})")
            unknown = [w for w in worker_ids if w not in self._workers or self._workers[w].info is None]
            if unknown:
                raise ControllerError(f"job {job_id}: unknown or not ready workers {unknown}; call sync_workers()")
            workers = [self._workers[w] for w in worker_ids]
            busy = {w.worker_id: w.busy_job for w in workers if w.busy_job}
            if busy:
                raise ControllerError(f"job {job_id}: workers are busy {busy}; pick idle workers or cancel")
            groups = self._node_groups(job_id, workers, placement)
            gang = None
            if len(groups) > 1:
                per_rank = mode == "per-gpu" and builtin_kinds().get(kind).process_per_gpu
                k = len(groups[0])
                gang = GangRun(job_id, run_id, [
                    GangNode(group[0].node_id, i, group[0].worker_id, [w.worker_id for w in group],
                             list(range(i * k, (i + 1) * k)) if per_rank else [i])
                    for i, group in enumerate(groups)])
            record = _Job(job_id, run_id, list(worker_ids), workers[0].node_id, time.time(), grace_s=grace_s,
                          stop=self._take_early_stop(job_id), gang=gang)
            self._jobs[job_id] = record
            for w in workers:  # the whole gang, in this one step
                w.busy_job = job_id
            leads = [group[0] for group in groups]
            stop_first = record.stop
        job = {
            "job_id": job_id,
            "run_id": run_id,
            "kind": kind,
            "spec": spec,
            "workdir": str(workdir),
            "power_cap_w": power_cap_w,
            "speed": speed,
            "attempt": attempt,
            "resuming": resuming,
            "launch": {"mode": mode, "stop_signal": launch.get("stop_signal") or "SIGTERM", "grace_s": grace_s,
                       "memory_limit_gib": launch.get("memory_limit_gib")},
            "stop": stop_first,
        }
        try:
            if gang is None:
                jobs = [{**job, "gpu_ids": [g for w in workers for g in w.info["gpu_ids"]]}]
            else:
                rendezvous = self._rendezvous(leads[0])
                jobs = [{**job, "gpu_ids": [g for w in group for g in w.info["gpu_ids"]],
                         "gang": {"node_rank": i, "nnodes": len(groups), **rendezvous}}
                        for i, group in enumerate(groups)]
            refs = {lead.handle.start.remote(one): lead for lead, one in zip(leads, jobs)}
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.options["worker_call_timeout_s"])
            for ref in refs:
                if ref not in ready:
                    raise ControllerError(f"worker {refs[ref].worker_id} did not answer in time")
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - named below with its worker
                    cause = getattr(exc, "cause", None) or exc
                    raise ControllerError(f"worker {refs[ref].worker_id} did not start job {job_id}: {cause}") \
                        from None
        except Exception as exc:
            for lead in leads:  # in case one starts after all, or did: its events name this run
                lead.handle.cancel.remote(job_id)
            with self._lock:
                job_record = self._jobs.get(job_id)
                if job_record is not None and job_record.run_id == run_id:
                    self._release(job_record)
            if isinstance(exc, ControllerError):
                raise
            raise ControllerError(f"job {job_id} could not be started: {exc}") from None
        with self._lock:
            record.launched = True
            late_stop = record.stop if record.stop != stop_first else None
        if late_stop is not None:  # asked while the workers were taking the job
            for lead in leads:
                self._cancel_on(lead, job_id, late_stop)

    def _node_groups(self, job_id: str, workers: list[_Worker],
                     placement: list[list[str]] | None) -> list[list[_Worker]]:
        """The job's workers node by node, rank 0's node first; ControllerError unless they make a gang: every
        group on one node of its own, as many workers on each, all in one zone. Call with the lock."""
        if placement is None:
            by_node: dict[str, list[_Worker]] = {}
            for w in workers:
                by_node.setdefault(w.node_id, []).append(w)
            groups = list(by_node.values())
        else:
            groups = [[self._workers[w] for w in ids] for ids in placement]
        ids = [w.worker_id for w in workers]
        zones = sorted({w.info.get("zone") for w in workers})
        if len(groups) > 1 and len(zones) > 1:  # (one node's logical GPUs may stand in several zones: a demo's)
            raise ControllerError(f"job {job_id}: workers {ids} span nodes in zones {zones}; a gang runs in one zone")
        for group in groups:
            nodes = sorted({w.node_id for w in group})
            if len(nodes) > 1:
                raise ControllerError(f"job {job_id}: one node's workers {[w.worker_id for w in group]} span nodes "
                                      f"{nodes}")
        if len({g[0].node_id for g in groups}) != len(groups):
            raise ControllerError(f"job {job_id}: placement {[[w.worker_id for w in g] for g in groups]} names a "
                                  f"node twice")
        if len({len(g) for g in groups}) > 1:
            raise ControllerError(f"job {job_id}: a gang has as many GPUs on each node; got "
                                  f"{[len(g) for g in groups]}")
        return groups

    def _rendezvous(self, lead: _Worker) -> dict:
        """Rank 0's node address (as Ray knows it) and a port its lead worker found free there."""
        address = next((n.get("NodeManagerAddress") for n in ray.nodes() if n["NodeID"] == lead.node_id), None)
        if not address:
            raise ControllerError(f"node {lead.node_id} of rank 0 is not in the cluster")
        port = ray.get(lead.handle.free_port.remote(), timeout=self.options["worker_call_timeout_s"])
        return {"master_addr": address, "master_port": int(port)}

    def _take_early_stop(self, job_id: str) -> str | None:
        """The stop asked for a job before it started, if recent enough; forgets stale ones. Call with the lock."""
        now = time.monotonic()
        for stale in [j for j, (_, at) in self._early_stops.items() if now - at > EARLY_STOP_TTL_S]:
            del self._early_stops[stale]
        early = self._early_stops.pop(job_id, None)
        return early[0] if early else None

    def cancel_job(self, job_id: str, outcome: str = "cancelled") -> bool:
        """Ask the job's worker to stop it: its stop signal, its grace, then SIGKILL.

        The ``finished`` event (``outcome``: ``cancelled``, or ``suspended`` to resume later) follows once the
        job has stopped (checkpointed, for training). A job still being started is stopped as soon as its
        processes exist. Returns False when the controller runs no such job; the stop is then kept for
        ``EARLY_STOP_TTL_S``, in case the job's start_job is on its way.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                self._early_stops[job_id] = (outcome, time.monotonic())
                return False
            if job.stop is None or outcome == "cancelled":  # a user's cancel overrides a pending suspension
                job.stop = outcome
            if job.gang is not None:
                job.gang.stop_asked = True  # a rank that fails from now on fails because of the stop
            if not job.launched:
                return True  # start_job passes it on once the workers have the job
            workers = [self._workers[w] for w in job.leads if w in self._workers]
        if not workers:
            return False
        answers, errors = [], []
        for worker in workers:  # every node of a gang, even when one of them does not answer
            try:
                answers.append(self._cancel_on(worker, job_id, outcome))
            except ControllerError as exc:
                errors.append(exc)
        if errors and not any(answers):
            raise errors[0]
        return any(answers)

    def _cancel_on(self, worker: _Worker, job_id: str, outcome: str) -> bool:
        try:
            return bool(ray.get(worker.handle.cancel.remote(job_id, outcome),
                                timeout=self.options["worker_call_timeout_s"]))
        except ray.exceptions.RayError as exc:
            raise ControllerError(f"worker {worker.worker_id} did not cancel job {job_id}: {exc}") from None

    def running(self) -> list[dict]:
        """The jobs the controller runs: job_id, run_id, worker_ids, node_id, pid and started_at (once started),
        latest progress."""
        with self._lock:
            return [
                {
                    "job_id": j.job_id,
                    "run_id": j.run_id,
                    "worker_ids": list(j.worker_ids),
                    "node_id": j.node_id,
                    "pid": j.started.pid if j.started else None,
                    "started_at": j.started.at if j.started else None,
                    "progress": dict(j.progress),
                }
                for j in self._jobs.values()
            ]

    def _release(self, job: _Job, keep: Collection[str] = ()) -> None:
        """Forget a job and free its workers, except those in ``keep`` (still stopping its processes). Call with
        the lock held."""
        self._jobs.pop(job.job_id, None)
        self._free(job.job_id, [w for w in job.worker_ids if w not in keep])

    def _free(self, job_id: str, worker_ids: list[str]) -> None:
        """Free the workers that are still held for ``job_id``. Call with the lock held."""
        for worker_id in worker_ids:
            worker = self._workers.get(worker_id)
            if worker is not None and worker.busy_job == job_id:
                worker.busy_job = None

    def _stopping_nodes(self, job: _Job, lost_worker: str) -> list[GangNode]:
        """The nodes of a gang, other than the lost worker's, whose processes may still run: their workers stay
        held until each node reports its end, so that no job starts on a GPU a stopping rank still uses (nor a
        start is refused by a worker still busy). None for a job on one node. Call with the lock held."""
        if job.gang is None:
            return []
        return [n for n in job.gang.nodes
                if n.lead != lost_worker and n.finished is None and n.lead in self._workers]

    def _lost_event(self, job: _Job, reason: str) -> Finished:
        """A finished event for a job whose worker vanished, with the energy of the last sample seen."""
        energy = None
        started = job.started
        if job.gang is not None:
            energy = job.gang.lost_energy()
            return Finished(job_id=job.job_id, run_id=job.run_id, worker_id=job.lead, at=time.time(),
                            exit_status=ExitStatus.LOST, error=f"a node of the gang was lost: {reason}",
                            energy=energy, result={"nodes": job.gang.breakdown()},
                            power_cap=started.power_cap if started else None, energy_partial=energy is not None)
        if started is not None and job.last_sample is not None:
            last = job.last_sample
            duration_s = max(0.0, last.timestamp_s - started.at)
            energy_j = last.gpu_energy_j + last.cpu_energy_j
            energy = EnergyTotals(
                gpu_energy_j=last.gpu_energy_j, cpu_energy_j=last.cpu_energy_j, gpu_method=started.gpu_method,
                cpu_method=started.cpu_method, avg_power_w=energy_j / duration_s if duration_s > 0 else 0.0,
                peak_power_w=job.peak_power_w, duration_s=duration_s, started_s=started.at,
                ended_s=last.timestamp_s)
        return Finished(job_id=job.job_id, run_id=job.run_id, worker_id=job.lead, at=time.time(),
                        exit_status=ExitStatus.LOST, error=reason, energy=energy,
                        power_cap=started.power_cap if started else None,
                        energy_partial=energy is not None)  # up to the last sample the controller received

    # --- events --------------------------------------------------------------------------------------------

    def report(self, event: WorkerEvent) -> int:
        """Accept an event from a worker; returns its sequence number. A ``Finished`` event frees the workers."""
        with self._lock:
            if isinstance(event, Finished):
                self._end_draining(event)
            job = self._jobs.get(event.job_id)
            if job is not None and job.run_id != event.run_id:
                job = None  # an event of an earlier run (one declared lost, say): logged, but it changes nothing
            if job is not None and job.gang is not None:
                combined = self._through_gang(job, event)
                return self._events.append(combined) if combined is not None else self._events.last_seq
            if job is not None:
                if isinstance(event, Started):
                    job.started = event
                elif isinstance(event, Progress):
                    job.progress = event.progress
                    if event.samples:
                        job.last_sample = event.samples[-1]
                        job.peak_power_w = max([job.peak_power_w]
                                               + [s.gpu_power_w + s.cpu_power_w for s in event.samples])
                elif isinstance(event, Finished):
                    self._release(job)
            return self._events.append(event)

    def _end_draining(self, event: Finished) -> None:
        """A node of a lost gang has stopped: free its workers. Call with the lock."""
        drained = self._draining.get(event.worker_id)
        if drained is not None and drained[:2] == (event.job_id, event.run_id):
            del self._draining[event.worker_id]
            self._free(event.job_id, drained[2])

    def _through_gang(self, job: _Job, event: WorkerEvent) -> WorkerEvent | None:
        """A gang node's event turned into the job's (None: nothing to log yet). Call with the lock.

        The first node that fails while no stop was asked stops the others (their stop signal, grace, SIGKILL).
        """
        gang = job.gang
        if isinstance(event, Started):
            combined = gang.on_started(event)
            if combined is not None:
                job.started = combined
            return combined
        if isinstance(event, Progress):
            combined = gang.on_progress(event)
            if combined is not None:
                job.progress = combined.progress
                job.last_sample = gang.last_sample
                job.peak_power_w = gang.peak_power_w
            return combined
        failed, combined = gang.on_finished(event)
        if failed is not None:
            log.warning("job %s: %s", job.job_id, gang.failure_reason(failed))
            job.stop = job.stop or "cancelled"  # nodes still being started are stopped once they are
            for node in gang.nodes:
                other = self._workers.get(node.lead)
                if node.finished is None and other is not None:
                    other.handle.cancel.remote(job.job_id, "cancelled")
        if combined is not None:
            self._release(job)
        return combined

    def fetch_events(self, after_seq: int, timeout_s: float = 0.0,
                     limit: int = 1000) -> list[tuple[int, WorkerEvent]]:
        """The events numbered above ``after_seq`` (at most ``limit``), oldest first.

        Waits up to ``timeout_s`` seconds for one when there are none, and returns as soon as one arrives.
        Events stay until acknowledged with ``ack_events``.
        """
        return self._events.fetch(after_seq, timeout_s, limit)

    def ack_events(self, upto_seq: int) -> int:
        """Forget the events numbered up to ``upto_seq`` (the daemon has committed them); returns how many."""
        return self._events.ack(upto_seq)

    def info(self) -> dict:
        """The controller's epoch (new for each controller), start time, event counters and sizes."""
        with self._lock:
            return {
                "epoch": self.epoch,
                "started_at": self.started_at,
                "last_seq": self._events.last_seq,
                "pending_events": len(self._events),
                "workers": len(self._workers),
                "running": len(self._jobs),
                "options": dict(self.options),
            }

    # --- shutdown ------------------------------------------------------------------------------------------

    def shutdown_workers(self) -> None:
        """Stop every running job (its stop signal, then SIGKILL after its grace) and kill the worker actors."""
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
            longest_grace_s = max((j.grace_s for j in self._jobs.values()), default=0.0)
        refs = [w.handle.shutdown.remote() for w in workers]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=longest_grace_s + SHUTDOWN_SLACK_S)
        for w in workers:
            try:
                ray.kill(w.handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


# --- creating and attaching ----------------------------------------------------------------------------------


def get_or_create_controller(
    options: dict | None = None, *, name: str = CONTROLLER_NAME, namespace: str = NAMESPACE
):
    """The controller actor's handle: attached by name if it exists, else created detached (on this node).

    An existing controller is given ``options`` (``Controller.configure``): what changed is logged here and
    applies to workers created from now on; the workers it already has keep theirs until recreated.
    Needs ``ray.init`` first.
    """
    options = check_options(options)  # here, where the error is readable, not inside the actor
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    else:
        applied = ray.get(handle.configure.remote(options))
        if applied["changed"]:
            log.warning(
                "the running controller now has this daemon's options: %s; %d existing worker(s) keep their former "
                "options (zone included) until recreated (a node that rejoins, or the controller restarted)",
                ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in applied["changed"].items()),
                applied["workers_keeping_old"])
        return handle
    handle = (
        ray.remote(Controller)
        .options(
            name=name,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,  # two daemons starting at once get the same controller
            num_cpus=0,
            max_concurrency=MAX_CONCURRENCY,
            # On the head node: losing it loses the cluster anyway, whereas a GPU node may come and go. Hard
            # affinity: a soft one was seen to place it on a GPU node now and then (and lose it with that node).
            scheduling_strategy=NodeAffinitySchedulingStrategy(_head_node_id(), soft=False),
        )
        .remote(options)
    )
    ray.get(handle.info.remote())  # fail here, not on first use, if it cannot start
    return handle


def _head_node_id() -> str:
    """The head node's id; the driver's node where no node says it is the head."""
    for node in ray.nodes():
        if node.get("Alive") and HEAD_NODE_RESOURCE in node.get("Resources", {}):
            return node["NodeID"]
    return ray.get_runtime_context().get_node_id()


def get_controller(*, name: str = CONTROLLER_NAME, namespace: str = NAMESPACE):
    """The running controller's handle; ControllerError when there is none."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise ControllerError("no wattsched controller: start the daemon (wattsched daemon)") from None


def shutdown_controller(*, name: str = CONTROLLER_NAME, namespace: str = NAMESPACE) -> bool:
    """Stop the running jobs, kill the workers and the controller; False when there was no controller."""
    try:
        handle = ray.get_actor(name, namespace=namespace)
    except ValueError:
        return False
    try:
        ray.get(handle.shutdown_workers.remote())
    except ray.exceptions.RayError as exc:
        log.warning("the controller could not stop its workers: %s", exc)
    ray.kill(handle, no_restart=True)
    return True
