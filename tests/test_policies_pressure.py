"""Queue pressure: carbon-aware defers work only while the whole queue still meets its deadlines."""

from policies.backlog import Backlog, Demand
from policies.builtin import create_policy
from policies.decisions import Start, Wait
from policies.snapshot import RunningJob, Snapshot, ZonePool
from tests.test_policies_carbon import DIRTY_THEN_CLEAN, H, SLOW, TableForecast, job


def decide(jobs, backlog=(), free=4):
    snapshot = Snapshot(now_s=0.0, waiting=tuple(jobs), gpus=(), pools=(ZonePool("DE", 4, free),),
                        forecast=TableForecast(0.0, DIRTY_THEN_CLEAN), backlog=backlog)
    return create_policy("carbon-aware").decide(snapshot)


def test_a_job_alone_still_waits_for_the_clean_window():
    (d,) = decide([job("a", duration_h=2, deadline_h=5)])
    assert isinstance(d, Wait) and d.deferred and d.retry_at_s == 2 * H


def test_deferrals_stop_where_the_clean_window_would_overflow_past_latest_starts():
    # eight 1-GPU jobs of 2 h due at 6.25 h (latest start 4.25 h) on 4 GPUs; DE is clean from 2 h to 4 h. All
    # eight in the window would leave four to start at 4 h, within the margin of their latest start; four now and
    # four at 2 h meet every deadline with room to spare.
    jobs = [job(f"j{i}", duration_h=2, deadline_h=6.25) for i in range(8)]
    decisions = decide(jobs)
    starts = [d for d in decisions if isinstance(d, Start)]
    waits = [d for d in decisions if isinstance(d, Wait)]
    assert len(starts) == 4 and len(waits) == 4
    assert all(w.deferred and w.retry_at_s == 2 * H for w in waits)


def test_the_backlog_counts_jobs_that_are_not_offered():
    # the same queue, four of it deferred to 2 h in earlier rounds and handed back as the backlog: the four
    # offered now start now, where alone (no backlog) they would all wait for the window
    backlog = Backlog()
    for i in range(4):
        backlog.put(Demand(f"b{i}", ("DE",), 1, 2 * H, 5 * H, 2 * H))
    offered = [job(f"j{i}", duration_h=2, deadline_h=5) for i in range(4)]
    assert all(isinstance(d, Start) for d in decide(offered, backlog))
    assert all(isinstance(d, Wait) and d.deferred for d in decide(offered))
    # any collection of demands does, as the daemon may pass
    assert all(isinstance(d, Start) for d in decide(offered, tuple(backlog)))


def test_a_backlog_keeps_its_totals_as_jobs_come_and_go():
    backlog = Backlog()
    backlog.put(Demand("a", ("DE",), 2, 10.0, 100.0, 0.0))
    backlog.put(Demand("b", (), 3, 10.0, 100.0, 0.0))
    backlog.put(Demand("a", ("DE",), 1, 5.0, 100.0, 0.0))  # again: replaced
    assert (backlog.gpus, backlog.gpus_by_zones, len(backlog)) == (4, {("DE",): 1, (): 3}, 2)
    backlog.discard("a")
    backlog.discard("unknown")
    assert (backlog.gpus, backlog.gpus_by_zones, "a" in backlog, "b" in backlog) == (3, {(): 3}, False, True)


def test_a_pressed_queue_starts_at_full_speed_only_without_a_power_budget():
    # two 4-GPU jobs in the backlog, due one after the other, fill DE until 4 h: the second starts past its latest
    # start (the queue is pressed). A job offered now would take the planned half-power cap (less energy, flat
    # carbon); pressed, it starts at full speed to give its GPU back sooner, but under a power budget full speed
    # takes power that the due jobs may need, which the replay (GPUs only) does not see: the plan's cap stays.
    flat = TableForecast(0.0, {"DE": [300] * 8})
    backlog = Backlog()
    backlog.put(Demand("b1", ("DE",), 4, 2 * H, 2.5 * H, 0.0))
    backlog.put(Demand("b2", ("DE",), 4, 2 * H, 3 * H, 0.0))
    offered = (job("a", profile=SLOW, duration_h=1, deadline_h=8),)

    def cap(budget_w):
        snapshot = Snapshot(now_s=0.0, waiting=offered, gpus=(), pools=(ZonePool("DE", 4, 4),), forecast=flat,
                            backlog=backlog, power_budget_w=budget_w)
        (d,) = create_policy("carbon-aware").decide(snapshot)
        assert isinstance(d, Start), d
        return d.cap_fraction

    assert cap(None) == 1.0
    assert cap(10_000.0) == 0.5


def test_expected_arrivals_count_against_a_deferral():
    # a 2 h job due at 6 h waits for the clean window (2 h to 4 h); four jobs deferred to 5 h wait too (more than
    # the free GPUs: the queue is weighed). Four 1-GPU jobs expected at 2.5 h, each 1 h and due at 4 h (latest
    # start 3 h), would then find one GPU taken until 4 h and one of them start late: the job starts now
    # instead, and the expected jobs all find room.
    offered = [job("a", duration_h=2, deadline_h=6)]
    backlog = tuple(Demand(f"b{i}", ("DE",), 1, 1 * H, 12 * H, 5 * H) for i in range(4))
    expected = tuple(Demand("", ("DE",), 1, 1 * H, 4 * H, 2.5 * H) for _ in range(4))

    def decision(expected, backlog=backlog):
        snapshot = Snapshot(now_s=0.0, waiting=tuple(offered), gpus=(), pools=(ZonePool("DE", 4, 4),),
                            forecast=TableForecast(0.0, DIRTY_THEN_CLEAN), backlog=backlog, expected=expected)
        (d,) = create_policy("carbon-aware").decide(snapshot)
        return d

    assert isinstance(decision(()), Wait)
    assert isinstance(decision(expected), Start)
    # expected jobs due later leave it room in the window: it waits for it again
    later = tuple(e._replace(deadline_s=8 * H) for e in expected)
    assert isinstance(decision(later), Wait)
    # while the waiting jobs fit in the free GPUs at once the queue is not pressed, whatever is expected: a
    # cluster with room to spare defers as it would without a forecast of arrivals
    assert isinstance(decision(expected, backlog=()), Wait)


def test_a_deferred_job_must_keep_its_own_margin():
    # the same eight jobs due at 5 h (latest start 3 h): four at 2 h would still be on time, but with less than the
    # 2 h a deferred job keeps before its latest start; all that find room start now and none is deferred
    decisions = decide([job(f"j{i}", duration_h=2, deadline_h=5) for i in range(8)])
    assert sum(isinstance(d, Start) for d in decisions) == 4
    assert not any(isinstance(d, Wait) and d.deferred for d in decisions)


def test_a_deferral_that_leaves_the_job_itself_at_risk_is_refused():
    # four jobs waiting for room elsewhere hold every GPU from now to 4 h in the replay, so the offered job starts
    # past its latest start (3 h) whenever it is ready: deferring it does not put more jobs at risk, but it puts
    # this one at risk where starting now, in the GPU free now, keeps its deadline
    backlog = tuple(Demand(f"b{i}", ("DE",), 1, 4 * H, 5 * H, 0.0) for i in range(4))
    (d,) = decide([job("a", duration_h=2, deadline_h=5)], backlog)
    assert isinstance(d, Start), d


def test_a_pressed_queue_serves_jobs_that_can_still_be_on_time_before_late_ones():
    # one free GPU; three GPUs busy until 10 h. "late" is past its latest start already; "soon" (latest start
    # 1 h) and "next" (latest 1.5 h, after "soon" in the replay: at risk) can still make theirs. Earliest latest
    # start first would give the GPU to "late", which is late whatever happens, and make "soon" late too.
    running = tuple(RunningJob(f"r{i}", "DE", "DE", 1, 300.0, False, 20 * H, 10 * H, end_s=10 * H) for i in range(3))
    jobs = (job("late", duration_h=2, deadline_h=1), job("soon", duration_h=2, deadline_h=3),
            job("next", duration_h=4, deadline_h=5.5))
    snapshot = Snapshot(now_s=0.0, waiting=jobs, gpus=(), pools=(ZonePool("DE", 4, 1),),
                        forecast=TableForecast(0.0, {"DE": [300] * 12}), running=running)
    starts = [d.job_id for d in create_policy("carbon-aware").decide(snapshot) if isinstance(d, Start)]
    assert starts == ["soon"]
