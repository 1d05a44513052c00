"""The scheduling core's ledger checks gang starts: the same number of GPUs on each node listed (the job's
gpus_per_node where it gave one), each GPU free and on its node, each node of a pool with room; a suspended gang
frees all its nodes. And the daemon's snapshot hands the job's gpus_per_node to the policy."""

from dataclasses import replace
from datetime import datetime, timezone

import pytest

from fakes import FakeClock, FixedPolicy as Answers, RecordingController, RecordingExecutor as Recorder
from policies.decisions import Start, Suspend
from policies.snapshot import GpuSlot, JobRequest, RunningJob, Snapshot, ZonePool
from scheduler.config import Settings
from scheduler.core import SchedulingCore
from scheduler.daemon.daemon import Daemon
from scheduler.store.engine import upgrade

GANG = JobRequest("g", 8, 0.0, zones=("A",), gpus_per_node=4)
OPEN = JobRequest("g", 6, 0.0, zones=("A",))  # its shape left open
N1 = tuple(f"n1g{k}" for k in range(4))
N2 = tuple(f"n2g{k}" for k in range(4))


def listed(job, busy=(), running=()):
    gpus = tuple(GpuSlot(g, g[:2], "A", busy=g in busy) for g in N1 + N2)
    return Snapshot(0.0, (job,), gpus=gpus, running=running)


def pooled(job, free=(4, 4), running=()):
    return Snapshot(0.0, (job,), gpus=(), pools=(ZonePool("A", 8, sum(free), ("A/1", "A/2"), free),),
                    running=running)


def gang_start(nodes, job_id="g"):
    return Start(job_id, nodes[0][0], "A", tuple(g for _, ids in nodes for g in ids), nodes=nodes)


@pytest.mark.parametrize("snapshot,decision,refusal", [
    (listed(GANG), gang_start((("n1", N1), ("n2", N2))), None),
    (listed(GANG, busy=("n2g3",)), gang_start((("n1", N1), ("n2", N2))), "on GPU n2g3, which is busy"),
    (listed(OPEN), gang_start((("n1", N1), ("n2", N2[:2]))), "on 4 GPUs of node n1, not the 3 its gang takes"),
    (listed(replace(GANG, gpus=4)), Start("g", "n1", "A", N1), None),
    (listed(replace(GANG, gpus=4, gpus_per_node=2)), Start("g", "n1", "A", N1),
     "on 1 node with 4 GPUs each; it asked for 2 per node"),
    (listed(GANG), gang_start((("n2", N1), ("n1", N2))), "on GPU n1g0, which is not on node n2 in A"),
    (listed(GANG), replace(gang_start((("n1", N1), ("n2", N2))), node_id="n2"), "that are not those of its nodes"),
    (listed(replace(GANG, gpus_per_node=None)), gang_start((("n1", N1), ("n1", N2))), "listed twice"),
    (listed(replace(GANG, gpus=7, gpus_per_node=None)), gang_start((("n1", N1), ("n2", N2[:3]))),
     "on 2 nodes, which cannot hold its 7 GPUs evenly"),
    (pooled(GANG), gang_start((("A/1", ()), ("A/2", ()))), None),
    (pooled(GANG, free=(4, 3)), gang_start((("A/1", ()), ("A/2", ()))), "on node A/2 in A without room: 3 free, 4"),
    (pooled(GANG), Start("g", "A/1", "A", ()), "on 1 node with 8 GPUs each; it asked for 4 per node"),
    (pooled(GANG), gang_start((("A/1", ()), ("B/2", ()))), "on node B/2, which is not a node of A"),
    (Snapshot(0.0, (GANG,), gpus=(), pools=(ZonePool("A", 8, 8),)), Start("g", "A", "A", ()), None),
    (Snapshot(0.0, (GANG,), gpus=(), pools=(ZonePool("A", 8, 8),)), gang_start((("A", ()), ("A2", ()))),
     "a pool without nodes"),
])
def test_the_ledger_checks_every_gang_start(snapshot, decision, refusal):
    executor = Recorder()
    SchedulingCore(Answers(decision)).run(snapshot, executor)
    if refusal is None:
        assert executor.done == [("start", "g")]
    else:
        assert executor.done[0][0] == "refused" and refusal in executor.done[0][2], executor.done


@pytest.mark.parametrize("kind", ["listed", "pooled"])
def test_a_suspended_gang_frees_every_node_it_ran_on_for_a_start_in_the_same_round(kind):
    if kind == "listed":
        running = (RunningJob("r", "A", "n1", 8, 0.0, True, None, 1.0, N1 + N2),)
        snapshot = listed(GANG, busy=N1 + N2, running=running)
        start = gang_start((("n1", N1), ("n2", N2)))
    else:
        running = (RunningJob("r", "A", "A/1", 8, 0.0, True, None, 1.0, nodes=("A/1", "A/2")),)
        snapshot = pooled(GANG, free=(0, 0), running=running)
        start = gang_start((("A/1", ()), ("A/2", ())))
    executor = Recorder()
    SchedulingCore(Answers(start)).run(snapshot, executor)
    assert executor.done[0][0] == "refused"  # without the suspension there is no room
    executor = Recorder()
    SchedulingCore(Answers(Suspend("r", "due"), start)).run(snapshot, executor)
    assert executor.done == [("suspend", "r"), ("start", "g")]


def test_the_daemon_hands_the_jobs_gpus_per_node_to_the_policy_which_spreads_it_over_two_nodes(tmp_path):
    """Two nodes of one GPU each in zone A: a 2-GPU job of open shape starts on both (its GPUs listed node by node);
    one that asks for 2 GPUs on one node can never run there."""
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"), policy="fifo")
    daemon = Daemon(settings, clock=FakeClock(now))
    upgrade(daemon.engine)
    daemon.controller = RecordingController()
    daemon._set_inventory([{"worker_id": f"w{i}", "node_id": f"node-{i}", "zone": "A", "max_power_w": 400.0}
                           for i in range(2)])
    store = daemon.store
    try:
        spread = store.submit(store.validate("diffusion-train", {"steps": 100}, gpus=2))
        one_node = store.submit(store.validate("diffusion-train", {"steps": 100}, gpus=2, gpus_per_node=2))
        requests = {r.job_id: r for r in daemon.snapshot().waiting}
        assert requests[spread.id].gpus_per_node is None and requests[one_node.id].gpus_per_node == 2
        daemon.schedule()
        assert [c[1] for c in daemon.controller.calls if c[0] == "start_job"] == [spread.id]
        assert [g.busy_job for g in daemon._inventory] == [spread.id, spread.id]
        assert store.get(one_node.id).reason == "waiting: no node in zone A has 2 GPUs"
        assert store.get(one_node.id).wait_code == "UnschedulableAndUnresolvable"
    finally:
        daemon.engine.dispose()
