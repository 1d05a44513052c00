"""The one scheduling core (scheduler.core): the checks every decision passes, and the daemon and the simulator
driving it to the same decisions on the same scenario."""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from fakes import FakeClock, FixedPolicy as Answers, RecordingController, RecordingExecutor
from policies.decisions import Start, Suspend, Wait
from policies.builtin import create_policy
from policies.snapshot import CapStep, GpuSlot, JobRequest, PowerProfile, RunningJob, Snapshot, ZonePool
from policies.status import Code, Status
from scheduler.carbon.signal import IntensityReading, ZoneStatus
from scheduler.config import Settings
from scheduler.core import SchedulingCore
from scheduler.daemon.daemon import Daemon
from scheduler.simulation.engine import Simulation
from scheduler.simulation.forecasts import make_forecast
from scheduler.simulation.inputs import Cluster, Job, Zone
from scheduler.store.engine import upgrade

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
PROFILE = PowerProfile("p", (CapStep(1.0, 1.0, 1.0), CapStep(0.5, 0.8, 0.5)))


def Recorder():  # noqa: N802  (read as the executor it makes)
    """Keeps each start's cap step, and the jobs the policy said nothing about."""
    return RecordingExecutor(lambda decision, job, step: (step,), record_unanswered=True)


def pool_snapshot(*jobs, free=2, budget_w=None, draw_w=0.0, running=()):
    return Snapshot(now_s=0.0, waiting=jobs, gpus=(), pools=(ZonePool("A", 2, free), ZonePool("B", 1, 1)),
                    power_budget_w=budget_w, power_draw_w=draw_w, running=running)


JOB = JobRequest("j", 1, 0.0, zones=("A",), power_w=100.0, power_profile=PROFILE)
FLEX = replace(JOB, job_id="f", interruptible=True)


@pytest.mark.parametrize("snapshot,decision,refusal", [
    (pool_snapshot(JOB), Start("j", "A", "A", (), cap_fraction=0.5), None),
    (pool_snapshot(JOB), Start("j", "B", "B", ()), "started j in B, not in ('A',)"),
    (pool_snapshot(JOB, free=0), Start("j", "A", "A", ()), "started j in A without room"),
    (pool_snapshot(JOB), Start("j", "A", "A", (), cap_fraction=0.7), "chose cap 0.7 for j, which its profile does not list"),
    (pool_snapshot(JOB), Start("j", "A", "A", (), until_s=10.0), "planned to suspend j, which is not interruptible"),
    (pool_snapshot(FLEX), Start("f", "A", "A", (), until_s=10.0), None),
    (pool_snapshot(JOB, budget_w=150.0, draw_w=60.0), Start("j", "A", "A", ()), "started j over the power budget"),
    (pool_snapshot(JOB, budget_w=150.0, draw_w=60.0), Start("j", "A", "A", (), cap_fraction=0.5), None),
    (pool_snapshot(JOB), Start("x", "A", "A", ()), "started x, which it was not offered"),
    (pool_snapshot(JOB), Suspend("j", "room"), "suspended j, which is not a running interruptible job"),
])
def test_every_decision_is_checked_against_the_snapshot_once_for_both_drivers(snapshot, decision, refusal):
    executor = Recorder()
    SchedulingCore(Answers(decision)).run(snapshot, executor)
    if refusal is None:
        assert executor.done[0][0] == "start"
    else:
        assert executor.done[0][0] == "refused" and refusal in executor.done[0][2]


def test_a_job_answered_twice_is_refused_and_unanswered_ones_are_reported():
    other = replace(JOB, job_id="k")
    executor = Recorder()
    wait = Wait("j", Status(Code.UNSCHEDULABLE, "P", "no"))
    SchedulingCore(Answers(wait, wait)).run(pool_snapshot(JOB, other), executor)
    assert executor.done == [("wait", "j"), ("refused", "j", "answers answered twice for j"), ("unanswered", ("k",))]


def test_a_suspension_frees_its_room_for_a_start_in_the_same_round_on_a_pool_but_not_twice():
    running = (RunningJob("r", "A", "A", 2, 200.0, True, None, 100.0),)
    other = replace(JOB, job_id="k")
    executor = Recorder()
    SchedulingCore(Answers(Suspend("r", "due"), Start("j", "A", "A", ()), Start("k", "A", "A", ()),
                           )).run(pool_snapshot(JOB, other, free=0, running=running), executor)
    assert [d[0] for d in executor.done] == ["suspend", "start", "start"]
    executor = Recorder()
    third = replace(JOB, job_id="m")
    SchedulingCore(Answers(Suspend("r", "due"), Start("j", "A", "A", ()), Start("k", "A", "A", ()),
                           Start("m", "A", "A", ()))).run(pool_snapshot(JOB, other, third, free=0, running=running),
                                                          executor)
    assert executor.done[-1] == ("refused", "m", "answers started m in A without room")


def test_listed_gpus_must_be_free_on_the_named_node_and_as_many_as_asked():
    gpus = (GpuSlot("g0", "n1", "A"), GpuSlot("g1", "n1", "A", busy=True), GpuSlot("g2", "n2", "B"))
    snapshot = Snapshot(now_s=0.0, waiting=(JOB, replace(JOB, job_id="k")), gpus=gpus)
    cases = [(Start("j", "n1", "A", ("g1",)), "on GPU g1, which is busy"),
             (Start("j", "n1", "A", ("g2",)), "on GPU g2, which is not on node n1 in A"),
             (Start("j", "n1", "A", ("g0", "g0")), "on GPUs g0, g0; it asked for 1 different ones"),
             (Start("j", "n1", "A", ("g0",)), None)]
    for decision, refusal in cases:
        executor = Recorder()
        SchedulingCore(Answers(decision)).run(snapshot, executor)
        assert (executor.done[0][0] == "refused" and refusal in executor.done[0][2]) if refusal else \
            executor.done[0][0] == "start", (decision, executor.done)
    executor = Recorder()
    SchedulingCore(Answers(Start("j", "n1", "A", ("g0",)), Start("k", "n1", "A", ("g0",)))).run(snapshot, executor)
    assert executor.done[1] == ("refused", "k", "answers started k on GPU g0, which is busy")


# --- the same scenario through the daemon and the simulator ------------------------------------------------

def intensity(zone, at_s):
    """Zone A: 500 g/kWh until two hours from NOW, then 50; zone B: 300 throughout."""
    if zone == "B":
        return 300.0
    return 500.0 if at_s < NOW.timestamp() + 7200 else 50.0


class Signal:
    """The daemon's carbon signal over ``intensity``, read at the daemon's clock, hourly."""

    def __init__(self, clock):
        self.clock = clock

    def intensity_g_per_kwh(self, zone, at_s):
        return intensity(zone, at_s)

    def reading(self, zone, at_s):
        return IntensityReading(zone, datetime.fromtimestamp(at_s, timezone.utc), intensity(zone, at_s), "test",
                                "actual" if at_s <= self.clock().timestamp() else "forecast")

    def forecast(self, zone, horizon_s=None):
        now_s = self.clock().timestamp()
        return [self.reading(zone, now_s + k * 3600.0) for k in range(int((horizon_s or 48 * 3600) // 3600) + 1)]

    def status(self, zone):
        return ZoneStatus(zone, "test", "ok", "", 0.0)


class Recording:
    """Wraps a policy and keeps its decisions, in a form both drivers share (no node or GPU ids)."""

    def __init__(self, policy):
        self.policy, self.name, self.rounds = policy, policy.name, []

    def decide(self, snapshot):
        decisions = self.policy.decide(snapshot)
        self.rounds.append((snapshot.now_s, sorted(_comparable(d) for d in decisions)))
        return decisions


def _comparable(decision):
    if isinstance(decision, Start):
        return (decision.job_id, "start", decision.zone, decision.cap_fraction, decision.until_s)
    if isinstance(decision, Wait):
        return (decision.job_id, "wait", decision.status.code.value, decision.status.plugin, decision.retry_at_s)
    return (decision.job_id, "suspend")


@pytest.mark.parametrize("policy", ["fifo", "carbon-aware"])
def test_the_daemon_and_the_simulator_make_the_same_decisions_on_the_same_scenario(tmp_path, policy):
    clock = FakeClock(NOW)
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"), policy=policy)
    daemon = Daemon(settings, clock=clock, signal=Signal(clock))
    upgrade(daemon.engine)
    daemon.controller = RecordingController()
    daemon._set_inventory([{"worker_id": w, "node_id": f"node-{z}", "zone": z, "max_power_w": 400.0}
                           for w, z in (("w0", "A"), ("w1", "A"), ("w2", "B"))])
    store = daemon.store
    submitted = [  # (gpus, zones, deadline from NOW, interruptible)
        (1, (), timedelta(hours=6), False), (2, ("A",), None, False), (1, (), timedelta(days=1), True),
        (1, ("B",), timedelta(hours=3), False), (2, (), timedelta(hours=1), False),
    ]
    ids = []
    try:
        for gpus, zones, ahead, interruptible in submitted:
            job = store.submit(store.validate("diffusion-train", {"steps": 100}, gpus=gpus, zones=list(zones),
                                              deadline=NOW + ahead if ahead else None, interruptible=interruptible))
            ids.append(job.id)
        requests = daemon.snapshot().waiting
        daemon.policy = live = Recording(daemon.policy)
        daemon.schedule()
    finally:
        daemon.engine.dispose()

    start_s = NOW.timestamp()
    hours = np.arange(start_s - 48 * 3600, start_s + 96 * 3600, 3600.0)
    cluster = Cluster(0.0, tuple(Zone(z, n, hours, np.array([intensity(z, t) for t in hours]))
                                 for z, n in (("A", 2), ("B", 1))))
    jobs = [Job(r.job_id, r.submitted_s, r.expected_duration_s, r.gpus, r.power_w, r.deadline_s, r.interruptible,
                r.zones, "", r.kind, i + 2) for i, r in enumerate(requests)]
    simulated = Recording(create_policy(policy))
    Simulation(cluster, jobs, {}, simulated, make_forecast("perfect", cluster)).run()

    assert len(live.rounds) == 1
    now_s, decisions = live.rounds[0]
    assert simulated.rounds[0] == (now_s, decisions)
    assert {d[0] for d in decisions} == set(ids)
    kinds = {d[1] for d in decisions}
    assert "start" in kinds and "wait" in kinds  # the scenario is not trivial: some start, some wait


def test_a_job_no_node_can_take_is_shown_unschedulable_with_the_plugin_that_said_so(tmp_path):
    from scheduler.cli.tables import render_job, render_jobs
    from scheduler.client import Job as ClientJob
    from scheduler.store.views import job_view

    clock = FakeClock(NOW)
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"), policy="fifo")
    daemon = Daemon(settings, clock=clock, signal=Signal(clock))
    upgrade(daemon.engine)
    daemon.controller = RecordingController()
    daemon._set_inventory([{"worker_id": f"w{i}", "node_id": "node-a", "zone": "A", "max_power_w": 400.0}
                           for i in range(2)])
    store = daemon.store
    try:
        big, small, later = [], [], []
        for job, gpus in ((big, 3), (small, 2), (later, 2)):
            job.append(store.submit(store.validate("diffusion-train", {"steps": 100, "batch_size": 30}, gpus=gpus)))
            clock.advance(seconds=1)  # arrival order
        (big,), (small,), (later,) = big, small, later
        daemon.schedule()
        with store.sessions() as session:
            from scheduler.store.models import Job as JobRow
            views = {job_id: job_view(session.get(JobRow, job_id)) for job_id in (big.id, small.id, later.id)}
    finally:
        daemon.engine.dispose()
    assert views[big.id]["unschedulable"] and views[big.id]["wait_plugin"] == "NodeCapacity"
    assert views[big.id]["wait_code"] == Code.UNRESOLVABLE.value and "no node in" in views[big.id]["reason"]
    assert views[small.id]["state"] == "running" and views[small.id]["wait_code"] is None
    assert not views[later.id]["unschedulable"] and views[later.id]["wait_code"] == Code.UNSCHEDULABLE.value
    jobs = [ClientJob.from_dict(views[j]) for j in (big.id, later.id)]
    table = render_jobs(jobs)
    assert "pending (unschedulable)" in table and "[NodeCapacity] waiting: no node in" in table
    assert table.count("(unschedulable)") == 1
    assert "decided by" in render_job(jobs[0]) and "NodeCapacity (UnschedulableAndUnresolvable)" in render_job(jobs[0])
