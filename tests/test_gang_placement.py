"""Gangs in the policies: K GPUs on each of N / K nodes of one zone, on listed GPUs and on pools with nodes; holds
kept node by node; preemption freeing a whole gang."""

import pytest
from fakes import RecordingExecutor

from policies import gang
from policies.builtin import create_policy
from policies.decisions import Start, Suspend, Wait
from policies.framework import ClusterView, CycleState, Profile, ProfilePolicy
from policies.plugins.capacity import ArrivalOrder, FullPower, NodeCapacity, PowerBudget
from policies.plugins.holds import DeadlineHolds
from policies.plugins.preemption import Preempt
from policies.snapshot import GpuSlot, JobRequest, RunningJob, Snapshot, ZonePool
from policies.status import Code
from scheduler.core import SchedulingCore

H = 3600.0


def listed(*free_per_node, size=4):
    """Zone A as listed GPUs: nodes n1, n2, ... of ``size`` GPUs, the first ``free`` of each idle."""
    return Snapshot(0.0, (), gpus=tuple(GpuSlot(f"n{i}g{k}", f"n{i}", "A", busy=k >= free)
                                        for i, free in enumerate(free_per_node, start=1) for k in range(size)))


def pooled(*free_per_node, size=4):
    """Zone A as a pool with nodes A/1, A/2, ... of ``size`` GPUs."""
    nodes = tuple(f"A/{i}" for i in range(1, len(free_per_node) + 1))
    return Snapshot(0.0, (), gpus=(), pools=(ZonePool("A", size * len(nodes), sum(free_per_node), nodes,
                                                      tuple(free_per_node)),))


def decide(snapshot, *jobs):
    return create_policy("fifo").decide(Snapshot(snapshot.now_s, jobs, snapshot.gpus, pools=snapshot.pools))


def layout(decision):
    """The nodes a start takes, named alike for both kinds of zone (pool node A/1 as n1)."""
    return [node_id.replace("A/", "n") for node_id, _ in decision.placement]


# (free GPUs on each of two 4-GPU nodes, job GPUs, gpus_per_node) -> the nodes it starts on, or the wait's code
CASES = [
    ((4, 4), 8, 4, ["n1", "n2"]),  # 8 GPUs as 4 + 4
    ((4, 4), 8, 8, Code.UNRESOLVABLE),  # no node has 8: never
    ((4, 4), 8, None, ["n1", "n2"]),  # no node has 8: the fewest nodes that fit, 4 + 4
    ((3, 0), 4, None, Code.UNSCHEDULABLE),  # a 4-GPU job never starts on 3 free GPUs
    ((3, 1), 4, None, Code.UNSCHEDULABLE),  # ... nor on 3 + 1: not the same number on each node
    ((2, 4), 4, None, ["n2"]),  # one node when one has room for all
    ((2, 2), 4, None, ["n1", "n2"]),  # else spread evenly over as few nodes as fit
    ((0, 4), 4, 2, Code.UNSCHEDULABLE),  # it asked for 2 on each of 2 nodes: one node with 4 will not do
    ((4, 4), 4, 4, ["n1"]),  # first fit
    ((4, 4), 6, 4, Code.UNRESOLVABLE),  # 4 does not divide 6
    ((4, 4), 12, None, Code.UNRESOLVABLE),  # more than the zone has
]


@pytest.mark.parametrize("zone", [listed, pooled])
@pytest.mark.parametrize("free,gpus,per_node,expected", CASES)
def test_a_gang_takes_k_gpus_on_each_of_n_over_k_nodes_of_one_zone(zone, free, gpus, per_node, expected):
    (decision,) = decide(zone(*free), JobRequest("j", gpus, 0.0, gpus_per_node=per_node))
    if isinstance(expected, Code):
        assert isinstance(decision, Wait) and decision.status.code is expected, decision
        assert decision.status.plugin == "NodeCapacity"
        return
    assert isinstance(decision, Start), decision
    assert layout(decision) == expected
    assert decision.node_id == decision.placement[0][0] and decision.zone == "A"
    assert (decision.nodes == ()) == (len(expected) == 1)  # a one-node start is written as before
    if zone is listed:
        assert len(decision.gpu_ids) == gpus and decision.gpu_ids == tuple(
            g for _, ids in decision.placement for g in ids)
        assert all(g.startswith(node) for node, ids in decision.placement for g in ids)
    else:
        assert decision.gpu_ids == ()


def test_the_waits_say_which_shape_the_gang_waits_for_and_where_it_could_ever_run():
    reason = lambda free, gpus, k: decide(listed(*free), JobRequest("j", gpus, 0.0, gpus_per_node=k))[0].reason  # noqa: E731
    assert reason((4, 4), 8, 8) == "waiting: no node in zone A has 8 GPUs"
    assert reason((0, 4), 4, 2) == "waiting for 2 free GPUs on each of 2 nodes in zone A"
    assert reason((3, 1), 4, None) == ("waiting for 4 free GPUs on one node, or 2 free GPUs on each of 2 nodes "
                                       "in zone A")
    assert reason((4, 4), 6, 4) == "waiting: gpus_per_node 4 does not divide the job's 6 GPUs"
    assert reason((4, 4), 12, None) == "waiting: no node in zone A has 12 GPUs, nor enough nodes to spread them evenly"
    assert reason((4, 4, 4), 12, 6) == "waiting: zone A has no 2 nodes of 6 GPUs"


def test_a_pool_without_nodes_takes_any_job_its_count_has_room_for_whatever_its_shape():
    snapshot = Snapshot(0.0, (), gpus=(), pools=(ZonePool("A", 8, 5),))
    (start,) = decide(snapshot, JobRequest("j", 4, 0.0, gpus_per_node=2))
    assert isinstance(start, Start) and start.node_id == "A" and start.nodes == () and start.gpu_ids == ()
    (wait,) = decide(snapshot, JobRequest("j", 6, 0.0, gpus_per_node=2))
    assert wait.status.code is Code.UNSCHEDULABLE and wait.reason == "waiting for 6 free GPUs on one node in zone A"


@pytest.mark.parametrize("counts,gpus,per_node,expected", [
    ((4, 4), 8, None, 4), ((8, 1), 8, None, 8), ((2, 2, 2, 2), 8, None, 2), ((3, 3), 4, None, 2),
    ((3, 1), 4, None, None), ((4, 4), 8, 2, None), ((2, 2, 2, 2), 8, 2, 2), ((), 1, None, None),
])
def test_the_gang_rule_picks_the_fewest_nodes_with_the_same_gpus_on_each(counts, gpus, per_node, expected):
    assert gang.fit(counts, gpus, per_node) == expected


def test_a_cluster_view_takes_every_node_of_a_gang_and_a_suspended_gang_gives_all_of_them_back():
    view = ClusterView(listed(4, 4, 2))
    placement = view.take("A", 8, 4)
    assert [node for node, _ in placement] == ["n1", "n2"] and view.free_counts("A") == {"n1": 0, "n2": 0, "n3": 2}
    gang_job = RunningJob("g", "A", "n1", 8, 0.0, True, None, None, tuple(g for _, ids in placement for g in ids))
    assert view.held_by(gang_job) == {"n1": 4, "n2": 4}
    view.release(gang_job)
    assert view.free_counts("A") == {"n1": 4, "n2": 4, "n3": 2} and view.fits("A", 8, 4)
    pool_view = ClusterView(pooled(0, 0))
    pool_view.release(RunningJob("g", "A", "A/1", 8, 0.0, True, None, None, nodes=("A/1", "A/2")))
    assert pool_view.free_counts("A") == {"A/1": 4, "A/2": 4}


# --- holds -------------------------------------------------------------------------------------------------------

def holds_policy() -> ProfilePolicy:
    holds = DeadlineHolds()
    return ProfilePolicy(Profile("fifo-with-holds", queue_sort=ArrivalOrder(), cap_chooser=FullPower(),
                                 filters=(NodeCapacity(), PowerBudget(), holds), pre_filters=(holds,)))


def test_a_gang_holds_whole_nodes_so_a_job_that_would_split_the_last_free_one_waits():
    """Four nodes of 4 GPUs. The gang (8 GPUs as 4 + 4) must start by 2 h; at 2 h nodes A/1 (freed at 1 h) and A/4
    are whole, A/2 and A/3 half taken until 10 h. Counted per zone, a 3-GPU job on A/4 would leave 9 free GPUs
    for 8; counted per node it leaves only one whole node, so it waits. A 2-GPU job that fills A/2 starts."""
    running = (RunningJob("r0", "A", "A/1", 4, 0.0, False, None, 1 * H, end_s=1 * H),
               RunningJob("r1", "A", "A/2", 2, 0.0, False, None, 10 * H, end_s=10 * H),
               RunningJob("r2", "A", "A/3", 2, 0.0, False, None, 10 * H, end_s=10 * H))
    pools = (ZonePool("A", 16, 8, ("A/1", "A/2", "A/3", "A/4"), (0, 2, 2, 4)),)
    gang_job = JobRequest("g", 8, 0.0, deadline_s=3 * H, expected_duration_s=1 * H, power_w=0.0, gpus_per_node=4)
    for gpus, starts in ((3, False), (2, True)):
        small = JobRequest("s", gpus, 1.0, expected_duration_s=5 * H, power_w=0.0)
        wait, decision = holds_policy().decide(Snapshot(0.0, (gang_job, small), gpus=(), pools=pools,
                                                        running=running))
        assert isinstance(wait, Wait) and wait.hold.gpus_per_node == 4 and wait.hold.start_s == 2 * H
        if starts:
            assert isinstance(decision, Start) and decision.node_id == "A/2"
        else:
            assert isinstance(decision, Wait) and decision.status.plugin == "DeadlineHolds", decision
            assert "held for job g" in decision.reason


# --- preemption --------------------------------------------------------------------------------------------------

def preempting_policy() -> ProfilePolicy:
    return ProfilePolicy(Profile("fifo-preempt", queue_sort=ArrivalOrder(), cap_chooser=FullPower(),
                                 filters=(NodeCapacity(), PowerBudget()), preemptors=(Preempt(),)))


@pytest.mark.parametrize("kind", ["listed", "pooled"])
def test_suspending_a_gang_frees_all_its_nodes_for_the_due_job_and_the_next(kind):
    """Two nodes of 4 GPUs, both taken by one interruptible 8-GPU gang with slack. A 4-GPU job falls due: the
    gang is suspended, and its two nodes free at once, so a second 4-GPU job starts beside the due one (the
    scheduling core's ledger agrees)."""
    if kind == "listed":
        snapshot = listed(0, 0)
        running = RunningJob("g", "A", "n1", 8, 0.0, True, 100 * H, 1 * H, tuple(s.gpu_id for s in snapshot.gpus))
    else:
        snapshot = pooled(0, 0)
        running = RunningJob("g", "A", "A/1", 8, 0.0, True, 100 * H, 1 * H, nodes=("A/1", "A/2"))
    due = JobRequest("due", 4, 0.0, deadline_s=1 * H, expected_duration_s=1 * H, power_w=0.0)
    other = JobRequest("other", 4, 1.0, power_w=0.0)
    snapshot = Snapshot(0.0, (due, other), snapshot.gpus, pools=snapshot.pools, running=(running,))
    executor = RecordingExecutor(lambda decision, job, step: (tuple(n for n, _ in decision.placement),))
    decisions = SchedulingCore(preempting_policy()).run(snapshot, executor)
    assert isinstance(decisions[0], Suspend) and decisions[0].job_id == "g"
    first, second = ("n1",), ("n2",)
    if kind == "pooled":
        first, second = ("A/1",), ("A/2",)
    assert executor.done == [("suspend", "g"), ("start", "due", first), ("start", "other", second)]


def test_a_due_gang_suspends_victims_on_enough_nodes_of_its_zone():
    """A due 8-GPU gang (4 + 4) on two 4-GPU nodes, each held by one interruptible 4-GPU job: both are suspended,
    as no single node can ever hold it."""
    snapshot = pooled(0, 0)
    running = (RunningJob("r1", "A", "A/1", 4, 0.0, True, 100 * H, 1 * H),
               RunningJob("r2", "A", "A/2", 4, 0.0, True, 100 * H, 1 * H))
    due = JobRequest("due", 8, 0.0, deadline_s=1 * H, expected_duration_s=1 * H, power_w=0.0, gpus_per_node=4)
    decisions = preempting_policy().decide(Snapshot(0.0, (due,), (), pools=snapshot.pools, running=running))
    assert [type(d).__name__ for d in decisions] == ["Suspend", "Suspend", "Start"]
    assert {n for n, _ in decisions[-1].placement} == {"A/1", "A/2"}


def test_cycle_state_counts_a_gang_started_in_the_cycle_on_each_of_its_nodes():
    snapshot = listed(4, 4)
    policy = create_policy("fifo")
    state = CycleState(snapshot, ClusterView(snapshot), None)
    decision = policy._decide_one(state, JobRequest("j", 8, 0.0, gpus_per_node=4, expected_duration_s=H), ("A",))
    assert isinstance(decision, Start) and state.started[0].nodes == (("n1", 4), ("n2", 4))
