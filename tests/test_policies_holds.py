"""Holds: a big job with a deadline keeps room from its latest start; other jobs start only where they leave it."""

import numpy as np
import pytest

from policies.decisions import Start, Wait
from policies.framework import ClusterView, CycleState, Profile, ProfilePolicy
from policies.plugins.capacity import ArrivalOrder, FullPower, NodeCapacity, PowerBudget
from policies.plugins.holds import DeadlineHolds, allowed_steps
from policies.snapshot import FULL_POWER, CapStep, Hold, JobRequest, PowerProfile, RunningJob, Snapshot, ZonePool
from policies.status import Code, Status
from scheduler.simulation.engine import Simulation
from scheduler.simulation.forecasts import make_forecast
from scheduler.simulation.inputs import Cluster, Job, Zone

H = 3600.0
SLOW = PowerProfile("slow", (FULL_POWER, CapStep(0.5, 0.5, 0.4)))


def policy(*permits, holds: bool = True) -> ProfilePolicy:
    plugin = DeadlineHolds()
    return ProfilePolicy(Profile("fifo-with-holds", queue_sort=ArrivalOrder(), cap_chooser=FullPower(),
                                 filters=(NodeCapacity(), PowerBudget()) + ((plugin,) if holds else ()),
                                 pre_filters=(plugin,) if holds else (), permits=permits))


def job(job_id, gpus, work_h, deadline_h=24.0, power_w=300.0, **kw) -> JobRequest:
    return JobRequest(job_id, gpus, 0.0, deadline_s=deadline_h * H, expected_duration_s=work_h * H, power_w=power_w,
                      **kw)


def snapshot(*waiting, pools=(("A", 4, 4),), holds=(), running=(), budget_w=None, now_h=0.0) -> Snapshot:
    return Snapshot(now_s=now_h * H, waiting=waiting, gpus=(), pools=tuple(ZonePool(*p) for p in pools),
                    holds=holds, running=running, power_budget_w=budget_w,
                    power_draw_w=sum(r.draw_w for r in running))


def held(zones=("A",), start_h=2.0, end_h=3.0, gpus=4, draw_w=1200.0) -> Hold:
    return Hold("B", zones, start_h * H, end_h * H, gpus, draw_w)


def test_a_big_job_that_must_wait_keeps_a_hold_from_its_latest_start_at_its_slowest_cap():
    busy = RunningJob("R", "A", "A", 6, 1800.0, False, None, 10 * H, end_s=10 * H)
    (wait,) = policy().decide(snapshot(job("B", 8, 1.0, deadline_h=5.0, power_profile=SLOW),
                                       pools=(("A", 8, 2),), running=(busy,)))
    assert isinstance(wait, Wait)
    # at its slowest cap (half speed) it needs 2 h: it holds from 3 h, and if there is no room by then, from when
    # there is, up to its latest start at full speed (4 h)
    assert wait.hold == Hold("B", ("A",), 3 * H, 5 * H, 8, 2400.0, latest_s=4 * H, steps=SLOW.steps)
    assert wait.retry_at_s == 3 * H  # looked at again when its hold begins


def test_a_hold_needs_the_power_of_the_least_drawing_cap_that_still_meets_its_deadline():
    hold = Hold("B", ("A",), 3 * H, 5 * H, 8, 2400.0, latest_s=4 * H, steps=SLOW.steps)  # 1 h of work, due at 5 h
    assert hold.draw_from_w(3 * H) == pytest.approx(960.0)  # 2 h left: half speed will do, at 40 % of the power
    assert hold.draw_from_w(3.5 * H) == 2400.0  # 1.5 h left: only full speed
    assert Hold("B", ("A",), 3 * H, 5 * H, 8, 2400.0).draw_from_w(3 * H) == 2400.0  # no caps known: full power


def test_a_hold_with_no_room_at_its_start_is_kept_from_when_room_frees_before_its_latest_start():
    """R keeps 7 of A's 8 GPUs until 3.5 h, after B's hold would begin (3 h) but before B's latest start (4 h):
    B can still make it, from 3.5 h, so S1 may not keep a GPU past B's latest start; S2 gives it back in time."""
    hold = Hold("B", ("A",), 3 * H, 5 * H, 8, 2400.0, latest_s=4 * H, steps=SLOW.steps)
    running = (RunningJob("R", "A", "A", 7, 2100.0, False, None, None, end_s=3.5 * H),)
    waits, ends_first = policy().decide(snapshot(job("S1", 1, 4.5), job("S2", 1, 4.0), pools=(("A", 8, 1),),
                                                 holds=(hold,), running=running))
    assert isinstance(waits, Wait) and "held for job B" in waits.reason and "within 3.5 h" in waits.reason
    assert isinstance(ends_first, Start)  # it gives its GPU back at 4 h: B then starts at full speed
    late = Hold("B", ("A",), 3 * H, 5 * H, 8, 2400.0, latest_s=3.4 * H, steps=SLOW.steps)  # R frees A too late
    (starts,) = policy().decide(snapshot(job("S1", 1, 4.0), pools=(("A", 8, 1),), holds=(late,), running=running))
    assert isinstance(starts, Start)  # a hold that cannot be kept blocks nobody


def test_holds_that_fit_the_budget_at_their_slowest_caps_are_all_kept():
    """Two 4-GPU holds (A and C) of 1,200 W each at full power, 480 W at their slowest caps, under a 2,000 W
    budget: at full power only one would fit, but each may run slow from its hold's start, so both are kept, and a
    small job that would keep a GPU of C past B2's latest start waits."""
    holds = tuple(Hold(name, (zone,), 3 * H, 5 * H, 4, 1200.0, latest_s=4 * H, steps=SLOW.steps)
                  for name, zone in (("B1", "A"), ("B2", "C")))
    small = job("S", 1, 4.5, power_w=100.0, zones=("C",))  # past B2's latest start (4 h)
    (wait,) = policy().decide(snapshot(small, pools=(("A", 4, 4), ("C", 4, 4)), holds=holds, budget_w=2000.0))
    assert isinstance(wait, Wait) and "held for job B2" in wait.reason
    hungry = job("S", 1, 4.5, power_w=1100.0)  # 1,100 W + 2 x 480 W is over the budget
    (wait,) = policy().decide(snapshot(hungry, pools=(("A", 4, 4), ("C", 4, 4)), holds=holds, budget_w=2000.0))
    assert isinstance(wait, Wait) and "power held for job B" in wait.reason


def test_a_small_job_does_not_start_where_its_run_would_take_a_held_zone():
    long, short = job("S1", 1, 3.0), job("S2", 1, 1.0)
    wait, start = policy().decide(snapshot(long, short, holds=(held(),)))
    assert isinstance(wait, Wait) and not wait.deferred and "held for job B" in wait.reason
    assert wait.retry_at_s == 21 * H  # when it falls due, it starts whatever is held
    assert isinstance(start, Start) and start.job_id == "S2"  # it ends before the hold begins


def test_a_hold_may_move_to_another_zone_but_is_kept_somewhere():
    decisions = policy().decide(snapshot(job("S1", 1, 3.0), job("S2", 1, 3.0), job("S3", 1, 3.0, zones=("C",)),
                                         pools=(("A", 4, 4), ("C", 4, 4)), holds=(held(zones=("A", "C")),)))
    # the first takes A, so the hold moves to C; the second may only join it in A; the third, allowed only in C,
    # waits
    assert [(type(d), getattr(d, "zone", None)) for d in decisions] == [(Start, "A"), (Start, "A"), (Wait, None)]


def test_a_job_that_is_due_starts_whatever_is_held():
    (start,) = policy().decide(snapshot(job("S", 1, 3.0, deadline_h=3.0), holds=(held(),)))
    assert isinstance(start, Start)


def test_a_hold_that_begins_after_the_jobs_own_latest_start_does_not_keep_it_waiting():
    (start,) = policy().decide(snapshot(job("S", 1, 3.0, deadline_h=4.0), holds=(held(),)))  # latest start 1 h
    assert isinstance(start, Start)


def test_a_hold_that_cannot_be_kept_anyway_blocks_nobody():
    def decide(running_until_h):
        running = (RunningJob("R", "A", "A", 2, 600.0, False, None, None, end_s=running_until_h * H),)
        return policy().decide(snapshot(job("S", 1, 3.0), pools=(("A", 4, 2),), holds=(held(),), running=running))

    assert isinstance(decide(2.5)[0], Start)  # R holds 2 GPUs past the hold's start: B cannot have 4 then
    assert isinstance(decide(1.5)[0], Wait)  # R is gone by then: S would be what breaks the hold


def test_held_power_counts_against_the_budget_anywhere():
    pools = (("A", 8, 8), ("C", 8, 8))
    one, two = job("S1", 1, 3.0), job("S2", 2, 3.0)
    hold = held(zones=("A",), gpus=4, draw_w=1200.0)
    assert isinstance(policy().decide(snapshot(one, pools=pools, holds=(hold,), budget_w=1500.0))[0], Start)
    (wait,) = policy().decide(snapshot(two, pools=pools, holds=(hold,), budget_w=1500.0))
    assert isinstance(wait, Wait) and "power held for job B" in wait.reason


def test_the_caps_that_keep_a_hold_are_noted_for_the_cap_chooser():
    small = job("S", 1, 1.0, power_profile=SLOW)  # 1 h at full speed, 2 h at its slowest cap
    snap = snapshot(small, holds=(held(start_h=1.5),))
    state = CycleState(snap, ClusterView(snap), None, holds={"B": held(start_h=1.5)})
    zones, status = DeadlineHolds().filter(state, small, ("A",))
    assert zones == ("A",) and status.ok
    assert allowed_steps(state, small, "A") == (FULL_POWER,)


def test_min_node_share_is_checked():
    with pytest.raises(ValueError, match="min_node_share"):
        DeadlineHolds(min_node_share=1.5)


class DeferUntil:
    """A test permit: job ``job_id`` waits on purpose until ``until_s``, as a carbon plan might make it."""

    name = "DeferUntil"

    def __init__(self, job_id: str, until_s: float):
        self.job_id, self.until_s = job_id, until_s

    def permit(self, state, job, zone):
        if job.job_id == self.job_id and state.now_s < self.until_s:
            return Status(Code.WAIT, self.name, "deferred", retry_at_s=self.until_s)
        return Status(Code.SUCCESS, self.name)


@pytest.mark.parametrize("holds", [True, False])
def test_in_the_simulator_a_deferred_big_job_meets_its_deadline_only_with_holds(holds):
    """B (2 GPUs, 1 h, latest start 4 h) is deferred to 3.5 h; S (1 GPU, 4 h) arrives at 1 h. Without holds S
    takes a GPU until 5 h and B misses its deadline; with them S waits for B."""
    cluster = Cluster(0.0, (Zone("A", 2, np.array([0.0]), np.array([100.0])),))
    jobs = [Job("B", 0.0, H, 2, 300.0, 5 * H, False, ("A",), "", "", 2),
            Job("S", 1 * H, 4 * H, 1, 300.0, 30 * H, False, ("A",), "", "", 3)]
    runs = Simulation(cluster, jobs, {}, policy(DeferUntil("B", 3.5 * H), holds=holds),
                      make_forecast("perfect", cluster)).run()
    done = {r.job.job_id: r.completed_s for r in runs}
    if holds:
        assert done == {"B": 4.5 * H, "S": 8.5 * H}
    else:
        assert done["B"] > 5 * H

