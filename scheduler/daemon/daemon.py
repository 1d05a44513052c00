"""The scheduler daemon: queue in the database, decisions from a policy, execution through the Ray controller.

It is a Ray driver hosting the REST API, an APScheduler 3 scheduler (the scheduling tick, reconciliation with
the controller) and the event thread that records what the workers report. The daemon is the only writer of
the database. Submits and finishes run the tick at once, so an idle cluster starts work without waiting for
the next interval. The grids' carbon signal (``GridCarbon``) and the emissions charged to runs
(``RunEmissions``) are the daemon's own, in modules of their own.

Several daemons may run on one database: the one holding the leader lease (``Leadership``) schedules, the
others stand by, serving the API, until its lease expires; then one of them takes over, attaching to the
controller as at start.

Every call to the controller goes through a ``ControllerLink``: when the controller actor is lost while the daemon
runs, the event thread gets or creates it again and reattaches as at start (its runs the new controller does not
know are requeued).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from collections.abc import Collection, Sequence
from typing import Any

from scheduler.api.server import ApiServer, check_listen_address, write_address_file
from scheduler.carbon.signal import CarbonSignal
from scheduler.clock import Clock, to_unix_s, utc_now
from scheduler.config import Settings
from scheduler.cluster.inventory import GpuInfo
from scheduler.cluster.link import ControllerLink
from scheduler.store.engine import DatabaseTimeouts, make_engine, make_session_factory, upgrade
from scheduler.store.inventory import record_inventory
from scheduler.errors import ConfigError, ControllerUnavailable, DatabaseUnavailable
from scheduler.daemon.estimates import RecentRuns
from scheduler.carbon.grid import GridCarbon, configured_signal
from scheduler.store.job_state import JobState
from scheduler.store.jobs import JobStore, Submission
from scheduler.store.lease import Lease
from scheduler.store.timers import TimerStore
from scheduler.carbon.emissions import RunEmissions
from scheduler.core import SchedulingCore
from scheduler.daemon.arrivals import ArrivalForecast
from scheduler.daemon.db_outage import DatabaseOutage
from scheduler.daemon.events import EventRecorder
from scheduler.daemon.executor import ControllerExecutor
from scheduler.daemon.leadership import STANDBY, Leadership
from scheduler.daemon.queue import WaitingQueue
from scheduler.daemon.running import RunningJobs
from scheduler.daemon.timers import Timers
from policies.builtin import create_policy
from policies.backlog import Demand
from policies.snapshot import GpuSlot, Hold, JobRequest, PowerProfile, Snapshot
from workers.file_modes import make_private_dir

log = logging.getLogger(__name__)

TICK_JOB_ID = "tick"
EVENT_POLL_S = 1.0
#: Why runs the controller does not know are requeued: at daemon start, and after the controller was lost.
LOST_WHILE_AWAY = "the controller no longer runs it (it or its node restarted)"
LOST_WITH_CONTROLLER = "the controller restarted and lost this run"


@dataclass(frozen=True)
class Drained:
    """What one round of recording the controller's events did: the last event number committed, whether a run
    finished, and the outage that stopped it before the end (None: every event fetched was recorded)."""

    after: int
    finished: bool
    stalled: DatabaseUnavailable | None = None


class Daemon:
    """One scheduler daemon. ``start()`` brings it up; ``stop()`` takes it down (running jobs keep running)."""

    def __init__(self, settings: Settings, clock: Clock = utc_now, signal: CarbonSignal | None = None):
        self.settings = settings
        self.clock = clock
        try:
            self.policy = create_policy(settings.policy, **settings.policy_options)
        except TypeError as exc:  # an option the policy does not take
            raise ConfigError(f"WATTSCHED_POLICY_OPTIONS: {exc}") from None
        self.engine = make_engine(settings.resolved_database_url, DatabaseTimeouts.of(settings))
        self.store = JobStore(make_session_factory(self.engine), clock, settings.jobs_dir)
        self.signal = signal or configured_signal(settings, self.store.sessions, clock)
        self.grid_carbon = GridCarbon(self.signal, clock)
        self.run_emissions = RunEmissions(self.store, self.signal, settings.default_zone)
        self.profiles = self._load_profiles()
        self.recent_runs = RecentRuns(self.store.recent_finished_runs)
        self.controller = ControllerLink(self._get_or_create_controller)
        self.events = EventRecorder(self.store, self.run_emissions, self.recent_runs, settings.max_samples_per_run)
        self.url: str | None = None
        self.token: str | None = None
        self._tick_lock = threading.Lock()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        # This daemon's current term as the leader: its tick and event threads end with it. Until a term begins it
        # is the daemon's own life (loops that tests drive on an unstarted daemon end when it stops).
        self._term = self._stopping
        self.leadership: Leadership | None = None
        self._tick_wanted = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self._event_thread: threading.Thread | None = None
        self._scheduler = None
        self.timers = Timers(clock, self.trigger_tick, self._suspend, self._time_up)
        # the waiting jobs between rounds; the database is compared with it every tick interval
        self.queue = WaitingQueue(self.store, clock, settings.tick_interval_s, work_s=self._work_s)
        self.arrivals = ArrivalForecast(self.store.sessions, self._submitted_work_s)
        self._server: ApiServer | None = None
        self._inventory: list[GpuInfo] = []
        self._attached_epoch: str | None = None  # the controller whose runs the database was last reconciled with
        self.db_outage = DatabaseOutage()

    def _load_profiles(self) -> dict[str, PowerProfile]:
        """Power profiles by job kind (empty: jobs always run at full power)."""
        if not self.settings.power_profiles:
            return {}
        from scheduler.simulation.inputs import load_profiles

        return load_profiles(self.settings.power_profiles)

    # --- life cycle -----------------------------------------------------------------------------------

    def start(self, serve_api: bool = True) -> Daemon:
        upgrade(self.engine)
        # Loaded now, before the event and tick threads exist: a first load in the tick thread while the event
        # thread records a finish could learn that run twice, or not at all.
        self.recent_runs.estimator()
        make_private_dir(self.settings.jobs_dir)  # every user's outputs: readable by the daemon's user only
        self._connect_ray()
        s = self.settings
        self.leadership = Leadership(Lease(self.store.sessions, self.clock), self.clock, s.leader_lease_s,
                                     s.leader_renew_s, self._lead, self._stand_by)
        if self.leadership.step() == STANDBY:
            log.warning("another daemon holds the leader lease on this database: this one stands by (it serves the "
                        "API) and takes over once that lease expires")
        self.leadership.start(self._stopping)
        if serve_api:
            self._start_api()
        return self

    @property
    def role(self) -> str:
        """``leader`` (this daemon schedules) or ``standby``."""
        return self.leadership.role if self.leadership is not None else STANDBY

    def _lead(self) -> None:
        """Begin a term as the leader: catch up with the controller (requeuing only the runs it does not know:
        those of a previous leader that still run are its), then tick, record events and keep timers."""
        # A standby's estimates missed the runs the previous leader recorded.
        self.recent_runs = self.events.recent_runs = RecentRuns(self.store.recent_finished_runs)
        self.recent_runs.estimator()
        after, lost = self._attach(0, LOST_WHILE_AWAY)
        if lost:
            log.warning("%d run(s) were lost while no daemon led; their jobs are queued again", lost)
        # The previous leader's timers (time limits, planned suspensions) died with it. Read before anything
        # starts: a database gone away now fails this election cleanly, and the next round tries it again.
        timer_store = TimerStore(self.store.sessions)
        running = timer_store.running(self.clock())
        self._term = threading.Event()
        if self._stopping.is_set():  # stopped while catching up: the term is over before it began
            self._term.set()
        self._event_thread = threading.Thread(target=self._event_loop, args=(after,), name="wattsched-events",
                                              daemon=True)
        self._event_thread.start()
        self._tick_thread = threading.Thread(target=self._tick_loop, name="wattsched-tick", daemon=True)
        self._tick_thread.start()
        self._start_scheduler()
        self.timers.take_over(timer_store, running)
        self.trigger_tick()

    def _stand_by(self) -> None:
        """End the term as the leader (another daemon holds the lease): no more ticks, events or timers; the
        API goes on."""
        self._term.set()
        self._tick_wanted.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = self.timers.scheduler = None
        self._join_threads()

    def _join_threads(self) -> None:
        for thread in (self._event_thread, self._tick_thread):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=EVENT_POLL_S * 3)

    def stop(self) -> None:
        """Stop scheduling and serving; idempotent. Running jobs go on under the controller."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._term.set()
        self._tick_wanted.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._server is not None:
            self._server.stop()
        self._join_threads()
        if self.leadership is not None:  # ends the lease, so that a standby takes over at once
            self.leadership.stop()
        self.engine.dispose()

    def _connect_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.settings.ray_address:
                ray.init(address=self.settings.ray_address, namespace="wattsched", log_to_driver=False)
            else:
                from workers.meters.factory import physical_gpu_count

                gpus = physical_gpu_count() or self.settings.logical_gpus
                # address="local": always a new instance, never a cluster that happens to run on this machine
                ray.init(address="local", num_gpus=gpus, namespace="wattsched", include_dashboard=False,
                         log_to_driver=False)
        self.controller.connect()

    def _get_or_create_controller(self):
        """The controller's handle, created with this daemon's options when there is none (at start, and
        when a lost controller is got back)."""
        from scheduler.cluster.controller import get_or_create_controller

        return get_or_create_controller(self._controller_options())

    def _attach(self, after: int, lost_reason: str) -> tuple[int, int]:
        """Catch up with the controller behind the link: its workers, the events it holds after ``after``,
        then requeue the runs it does not know. Returns the last event number seen and how many runs were lost.

        Holds the tick lock: a run a tick opens in the database before the controller starts it would
        otherwise look lost. Raises DatabaseUnavailable, before deciding anything is lost, when the database goes
        away meanwhile.
        """
        with self._tick_lock:
            self.sync_workers()
            while True:  # what happened while no daemon listened, before deciding what was lost
                drained = self._drain_events(after, 0.0)
                if drained.stalled:  # a run whose end is not recorded yet would look lost
                    raise DatabaseUnavailable("the database went away while catching up with the controller")
                if drained.after == after:
                    break
                after = drained.after
            lost = self.reconcile(lost_reason)
        self._attached_epoch = self.controller.epoch
        return after, lost

    def _controller_options(self) -> dict[str, Any]:
        s = self.settings
        return {
            "gpu_type": s.logical_gpu_type, "meter_mode": s.meter_mode, "sample_interval_s": s.sample_interval_s,
            "torch_threads": s.torch_threads, "default_zone": s.default_zone, "logical_zones": list(s.logical_zones),
            "power_cap_dry_run": s.power_cap_dry_run,
        }

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._scheduler.add_job(self.trigger_tick, "interval", seconds=self.settings.tick_interval_s,
                                id=TICK_JOB_ID, coalesce=True)
        self._scheduler.add_job(self._sync_workers_if_connected, "interval", seconds=self.settings.node_sync_s,
                                id="sync-workers", max_instances=1, coalesce=True)
        if self.grid_carbon.needs_refresh:  # keep the providers' cache fresh, starting right away
            self._scheduler.add_job(self.refresh_carbon, "interval", seconds=self.settings.carbon_refresh_s,
                                    id="carbon-refresh", max_instances=1, coalesce=True,
                                    next_run_time=datetime.now(timezone.utc))
        self._scheduler.start()
        self.timers.scheduler = self._scheduler

    @cached_property
    def auth(self):
        """Users and API tokens (scheduler.store.auth.TokenStore) in this daemon's database."""
        from scheduler.store.auth import TokenStore

        return TokenStore(self.store.sessions, self.clock)

    def _check_listen_address(self) -> None:
        from scheduler.daemon.admin_token import bootstrap_admin_token

        bootstrap_admin_token(self.auth, self.settings)  # a fresh deployment's first admin (docker/compose.yaml)
        check_listen_address(self.settings.host, self.auth.configured())

    def start_api_only(self) -> Daemon:
        """Serve the REST API on the database without Ray or scheduling (submissions queue, nothing starts):
        for benchmarks of the API and for inspecting a database."""
        upgrade(self.engine)
        make_private_dir(self.settings.jobs_dir)  # every user's outputs: readable by the daemon's user only
        self._start_api()
        return self

    def _start_api(self) -> None:
        self._check_listen_address()
        # As Jupyter does: the local OS user gets a token of their own, written where only they can read it.
        self.token = self.token or self.auth.local_token(self.settings.data_dir).secret
        self._server = ApiServer(self, self.settings.host, self.settings.port)
        self.url = self._server.start(self._stopping)
        write_address_file(self.settings.data_dir, self.url, self.token)

    # --- the service the API calls ---------------------------------------------------------------------

    def submit(self, submission: Submission, user_id: int | None = None):
        return self.submit_once(submission, user_id)[0]

    def submit_once(self, submission: Submission, user_id: int | None = None):
        """Queue a job (or find the one its idempotency key made): (job, created now)."""
        job, created = self.store.submit_once(submission, user_id)
        if created:
            self.queue.came(job.id)
            self.trigger_tick()
        return job, created

    def cancel(self, job_id: str, owner: int | None = None):
        """Cancel a job; ``owner``: only if it is that user id's (else JobNotFound)."""
        job, must_stop = self.store.request_cancel(job_id, owner)
        if must_stop:
            self.controller.send("cancel_job", job_id)
        else:
            self.queue.went(job_id)
            self._notify()
        return job

    def hold(self, job_id: str, owner: int | None = None):
        """Keep a waiting job from starting until released."""
        job = self.store.hold(job_id, owner)
        self.queue.went(job_id)
        self._notify()
        return job

    def release(self, job_id: str, owner: int | None = None):
        """Let a held job be scheduled again (a tick runs at once)."""
        job = self.store.release(job_id, owner)
        self.queue.came(job_id)
        self.trigger_tick()
        return job

    def wait_for(self, job_id: str, timeout_s: float):
        """The job once it is terminal, or as it is after ``timeout_s``."""
        deadline = self._monotonic() + timeout_s
        with self._changed:
            while True:
                job = self.store.get(job_id)
                remaining = deadline - self._monotonic()
                if JobState(job.state).terminal or remaining <= 0:
                    return job
                self._changed.wait(min(remaining, 1.0))

    @staticmethod
    def _monotonic() -> float:
        import time

        return time.monotonic()

    def inventory(self) -> list[GpuInfo]:
        """The cluster's GPUs as the controller last reported them."""
        return self._inventory

    def db_pool_size(self) -> int:
        """The database engine's pool size (SQLite's pools have none: 5, SQLAlchemy's default)."""
        return getattr(self.engine.pool, "size", lambda: 5)()

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def status(self) -> dict[str, Any]:
        return {
            "policy": self.policy.name,
            "database": self.engine.dialect.name,
            "role": self.role,
            "gpus": [dict(g.raw, busy_job=g.busy_job) for g in self._inventory],
            "queue": self.store.count_by_state(),
            "carbon": self.grid_carbon.health(sorted(self._zones())),
            "controller": self.controller.health(),
        }

    # --- carbon ---------------------------------------------------------------------------------------

    def refresh_carbon(self) -> None:
        """Refresh every zone's carbon data from its provider, then finalise emissions that used forecasts; the
        waiting jobs are offered again on the new forecasts."""
        self.grid_carbon.refresh()
        self.finalise_emissions()
        self.queue.reoffer()
        self.trigger_tick()

    def finalise_emissions(self) -> int:
        """Recompute emissions of runs charged at forecast values once actuals cover them; returns how many."""
        return self.run_emissions.finalise()

    def carbon(self, zone: str | None = None, duration_s: float | None = None,
               horizon_s: float = 48 * 3600.0) -> list[dict[str, Any]]:
        """Each zone's current intensity, signal health and forecast, and the cleanest window for a job; every
        zone of the cluster and of the carbon configuration unless ``zone`` names one."""
        zones = [zone] if zone else sorted(self._zones() | self.grid_carbon.zones)
        return self.grid_carbon.views(zones, duration_s, horizon_s)

    # --- scheduling -----------------------------------------------------------------------------------

    def trigger_tick(self) -> None:
        """Ask for a scheduling tick now. Requests made while a tick runs are merged into one more tick, never lost."""
        self._tick_wanted.set()

    def _tick_loop(self) -> None:
        term = self._term
        self.queue.reload()  # a new term: the previous leader changed the queue meanwhile
        while not term.is_set():
            self._tick_wanted.wait()
            self._tick_wanted.clear()
            if term.is_set():
                break
            try:
                self.tick()
            except ControllerUnavailable:
                pass  # logged once when the outage began; the tick after the controller is back catches up
            except DatabaseUnavailable as exc:
                self.db_outage.failed("scheduling", exc)  # logged once; the next interval's tick retries
            except Exception:  # a tick must never kill the loop; the next one retries
                log.exception("scheduling tick failed")
        self.queue.reload()  # the term is over: no notes are kept until the next one reads everything

    def _sync_workers_if_connected(self) -> None:
        try:
            self.sync_workers()
        except ControllerUnavailable:
            pass  # getting the controller back syncs its workers
        except DatabaseUnavailable as exc:
            self.db_outage.failed("the inventory", exc)  # the next sync records it

    def sync_workers(self) -> None:
        inventory = self.controller.call("sync_workers")
        self._set_inventory(inventory)
        record_inventory(self.store.sessions, inventory, self.clock())

    def _set_inventory(self, inventory: list[dict[str, Any]]) -> None:
        self._inventory = [GpuInfo(i["worker_id"], i["node_id"], i["zone"], i.get("busy_job"), i)
                           for i in inventory]

    def _zones(self) -> set[str]:
        """The zones of the cluster's GPUs."""
        return {g.zone for g in self._inventory}

    def snapshot(self, jobs: Sequence | None = None, holds: tuple[Hold, ...] = (),
                 backlog: Collection[Demand] = ()) -> Snapshot:
        """What the policy sees now: waiting jobs with their expected length and draw (``jobs``: those offered
        this round, as ``scheduler.store.queue.QueuedJob`` or job rows; None: every waiting job, read now), the
        room kept by the others (``holds``) and their demand (``backlog``), the arrivals expected from the last
        days' (``scheduler.daemon.arrivals``), GPUs, carbon forecast, and the running
        jobs (read only if the policy looks, to weigh suspending one for a job that is due, or when a power budget
        is set, to count their draw against it)."""
        now = self.clock()
        now_s = to_unix_s(now)
        jobs = self.store.waiting() if jobs is None else jobs
        estimator = self.recent_runs.estimator()
        own_runs = self.store.run_seconds([j.id for j in jobs if j.started_at is not None])
        waiting = tuple(
            JobRequest(job_id=j.id, gpus=j.gpus, submitted_s=to_unix_s(j.submitted_at), zones=tuple(j.zones or ()),
                       deadline_s=to_unix_s(j.deadline_at) if j.deadline_at else None,
                       interruptible=j.interruptible, kind=j.kind, priority=j.priority,
                       expected_duration_s=estimator.duration_s(j.kind, j.spec, j.progress, own_runs.get(j.id)),
                       power_w=estimator.power_w(j.kind), power_profile=self.profiles.get(j.kind),
                       started_s=to_unix_s(j.started_at) if j.started_at else None, gpus_per_node=j.gpus_per_node)
            for j in jobs
        )
        gpus = tuple(GpuSlot(g.worker_id, g.node_id, g.zone, busy=g.busy_job is not None,
                             max_power_w=g.raw.get("max_power_w")) for g in self._inventory)
        running = RunningJobs(self.store, self._inventory, estimator, now)
        budget_w = self.settings.power_budget_w or None
        return Snapshot(now_s=now_s, waiting=waiting, gpus=gpus,
                        intensity_g_per_kwh=self.grid_carbon.intensities(self._zones(), now_s),
                        forecast=self.grid_carbon.forecast(now_s), running=running, power_budget_w=budget_w,
                        # the draw is what the running jobs are estimated to draw, as waiting jobs are counted
                        power_draw_w=sum(r.draw_w for r in running) if budget_w else 0.0, holds=holds,
                        backlog=backlog, expected=self.arrivals.expected(now_s))

    def _work_s(self, job) -> float | None:
        """The work a waiting job has left, in seconds at full speed, as estimates say (None: unknown)."""
        return self.recent_runs.estimator().duration_s(job.kind, job.spec, job.progress)

    def _submitted_work_s(self, job) -> float | None:
        """A job's run time at full speed as submitted, as estimates say (None: unknown)."""
        return self.recent_runs.estimator().duration_s(job.kind, job.spec, None)

    def tick(self) -> None:
        """One scheduling round on what changed since the last (``scheduler.daemon.queue``): snapshot of the jobs
        offered, policy, apply."""
        if self._term.is_set():  # stopped, or another daemon leads now
            return
        with self._tick_lock:
            self._set_inventory(self.controller.call("inventory"))
            self._round()
        self.db_outage.recovered()

    def schedule(self) -> None:
        """A full round with the current inventory: the waiting jobs read again from the database, every one that
        may start offered to the policy, and the decisions applied (the scheduling core, with the controller as
        its executor)."""
        self.queue.reload()
        self._round()

    def _round(self) -> None:
        """Offer the policy what the queue says changed, apply its decisions, and arm a tick for the next job
        that falls due (a begin time, a deferred job's next look)."""
        try:
            offer = self.queue.begin_round(self._inventory)
            if offer.jobs or offer.full:
                executor = ControllerExecutor(self.store, self.controller, self._inventory, self.timers, self._notify,
                                              self.policy.name, self.queue)
                snapshot = self.snapshot(offer.jobs, offer.holds, self.queue.backlog)
                self.queue.offered(snapshot.waiting)
                SchedulingCore(self.policy).run(snapshot, executor)
            self.queue.end_round(self._inventory)
        except BaseException:
            self.queue.reload()  # half a round: what the queue holds may be off, so read it all next time
            raise
        if self.timers.running:  # (a round before the scheduler runs, as at a term's start, leaves it to the next)
            wake_s = self.queue.wake_to_arm()
            if wake_s is not None:
                self.timers.tick_at(wake_s)

    def _time_up(self, job_id: str, run_id: int) -> None:
        try:
            if self.store.run_is_open(run_id):
                job = self.store.get(job_id)
                log.info("job %s reached its time limit", job_id)
                self.store.request_cancel(job_id, why=f"time limit of {job.time_limit_s:g} s reached")
                self.controller.send("cancel_job", job_id)
        except DatabaseUnavailable as exc:  # a one-off timer: armed again, or the limit would never be enforced
            self.timers.time_limit(job_id, run_id, self.db_outage.failed("a time limit", exc))

    def _suspend(self, job_id: str, run_id: int) -> None:
        try:
            if self.store.run_is_open(run_id):
                log.info("suspending job %s at the end of its planned stretch", job_id)
                self.controller.send("cancel_job", job_id, "suspended")
        except DatabaseUnavailable as exc:
            retry_s = self.db_outage.failed("a planned suspension", exc)
            self.timers.suspend_at(job_id, run_id, to_unix_s(self.clock()) + retry_s)

    # --- events from the controller -------------------------------------------------------------------

    def _event_loop(self, after: int) -> None:
        attached = self.controller.generation  # the controller handle the daemon has caught up with
        term = self._term
        while not term.is_set():
            try:
                if self.controller.unavailable:
                    term.wait(self.controller.retry_in_s())
                    self.controller.reacquire()
                    continue
                if self.controller.generation != attached:
                    after, attached = self._reattach(after), self.controller.generation
                    continue
                drained = self._drain_events(after, EVENT_POLL_S)
            except ControllerUnavailable:
                continue  # the link logged it once; the next round gets the controller back
            except DatabaseUnavailable as exc:  # while reattaching: nothing was decided, do it all again
                term.wait(self.db_outage.failed("recording worker events", exc))
                continue
            except Exception as exc:  # Ray shutting down
                if term.is_set():
                    return
                log.warning("fetching events from the controller failed: %s", exc)
                term.wait(EVENT_POLL_S)
                continue
            if drained.after != after:
                self.db_outage.recovered()
            after = drained.after
            if drained.finished:
                self._notify()
                self.trigger_tick()
            if drained.stalled:  # the controller keeps the rest; fetch them again from ``after``
                term.wait(self.db_outage.failed("recording worker events", drained.stalled))

    def _reattach(self, after: int) -> int:
        """Catch up with a controller got back after an outage; returns the last event number seen."""
        new = self.controller.epoch != self._attached_epoch
        # A new controller numbers its events from 1; the same one (unreachable for a while) kept them.
        after, lost = self._attach(0 if new else after, LOST_WITH_CONTROLLER)
        if lost:
            log.warning("%d run(s) were lost with the controller; their jobs are queued again", lost)
        self.queue.reload()  # starts refused while the controller was away left their jobs waiting
        self._notify()
        self.trigger_tick()
        return after

    def _drain_events(self, after: int, timeout_s: float) -> Drained:
        """Record the controller's events after sequence number ``after`` (waiting up to ``timeout_s`` for the
        first) and acknowledge those committed.

        An event is acknowledged only once what it says is in the database: at the first one the database cannot
        take (it is away), draining stops, and that event and the ones after it stay with the controller, to be
        fetched again from the returned ``after``. Recording is idempotent, so an event recorded but not
        acknowledged (the daemon died in between) is recorded once when it comes again. An event that fails for
        any other reason (a bug) is logged and passed over, so that it cannot hold up the others.
        """
        events = self.controller.call("fetch_events", after, timeout_s)
        first_after, finished, stalled = after, False, None
        for seq, event in events:
            try:
                finished |= self.handle_event(event)
            except DatabaseUnavailable as exc:
                stalled = exc
                break
            except Exception:
                log.exception("could not record the %s event of run %s", event.type, event.run_id)
            after = seq
        if after != first_after:
            self.controller.send("ack_events", after)
        return Drained(after, finished, stalled)

    def reconcile(self, reason: str = LOST_WHILE_AWAY) -> int:
        """Requeue runs the database thinks are running but the controller does not (it or its node restarted);
        ``reason`` is what their jobs say.

        Call only after the controller's pending events are recorded, so that a run that finished while no
        daemon listened is recorded as finished, not lost. A lost run keeps the energy its samples measured and
        ends at its last sample. Returns how many runs were lost.
        """
        running = {int(r["run_id"]) for r in self.controller.call("running")}
        lost = 0
        for run in self.store.running_runs():
            if run.id not in running:
                self.events.record_lost(run.id, to_unix_s(run.started_at), reason)
                self.queue.came(run.job_id)
                lost += 1
        return lost

    def handle_event(self, event: dict[str, Any]) -> bool:
        """Record one worker event; True when a run finished (the cluster has room again, and its job may wait
        again or have met another's dependency)."""
        finished = self.events.record(event)
        if finished:
            self.queue.came(event.job_id)
        return finished


def main(args) -> int:
    """``wattsched daemon``: run until interrupted."""
    from dataclasses import replace

    settings = Settings.from_env()
    overrides = {k: getattr(args, k) for k in ("host", "port", "policy") if getattr(args, k, None) is not None}
    if getattr(args, "gpus", None):
        overrides["logical_gpus"] = args.gpus
    settings = replace(settings, **overrides)
    daemon = Daemon(settings).start()
    print(f"wattsched daemon listening on {daemon.url} (policy {settings.policy}, "
          f"database {settings.resolved_database_url.split('://')[0]}); Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.stop()
    return 0
