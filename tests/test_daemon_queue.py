"""The daemon's waiting queue: a round offers the policy only the jobs whose situation changed, parked jobs (a
begin time, dependencies) are written once and woken when their time comes or their dependency ends, and what
changed behind the daemon's back is found by the id comparison.

No Ray: the inventory is set by hand, rounds are run as the tick runs them, and a recording double stands in
for the controller.
"""

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from fakes import FakeClock, RecordingController
from policies.builtin import create_policy
from policies.decisions import Wait
from policies.snapshot import Hold
from policies.status import Code, Status
from scheduler.config import Settings
from scheduler.daemon.daemon import Daemon
from scheduler.daemon import queue as queue_module
from scheduler.daemon.queue import WaitingQueue
from scheduler.store.engine import upgrade
from scheduler.store.job_state import RunStatus
from workers.events import ExitStatus, Finished

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
SYNC_S = 5.0


class Offered:
    """Wraps a policy and keeps the ids of the jobs each snapshot offered, and the holds it handed back."""

    def __init__(self, policy):
        self.policy, self.name = policy, policy.name
        self.rounds, self.holds, self.backlogs = [], [], []

    def decide(self, snapshot):
        self.rounds.append([j.job_id for j in snapshot.waiting])
        self.holds.append(snapshot.holds)
        self.backlogs.append({d.job_id: d.ready_s for d in snapshot.backlog})
        return self.policy.decide(snapshot)


class Monotonic:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self):
        return self.now_s


@pytest.fixture
def daemon(tmp_path):
    settings = replace(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'w.db'}"), policy="fifo")
    daemon = Daemon(settings, clock=FakeClock(NOW))
    upgrade(daemon.engine)
    daemon.monotonic = Monotonic()
    daemon.queue = WaitingQueue(daemon.store, daemon.clock, SYNC_S, full_round_s=300.0, monotonic=daemon.monotonic,
                                work_s=daemon._work_s)
    daemon.controller = RecordingController()
    daemon.policy = Offered(create_policy("fifo"))
    daemon._set_inventory([gpu("w0"), gpu("w1")])
    yield daemon
    daemon.engine.dispose()


def gpu(worker_id, busy_job=None, zone="DE"):
    return {"worker_id": worker_id, "node_id": "node-a", "zone": zone, "busy_job": busy_job, "max_power_w": 400.0}


def submit(daemon, **kwargs):
    """Through the daemon, as the API submits."""
    return daemon.submit(daemon.store.validate("synthetic", {"steps": 10}, **kwargs))


def test_a_round_offers_the_new_job_only_and_parked_jobs_are_written_once(daemon, monkeypatch):
    written = []
    monkeypatch.setattr(queue_module, "record_waits", lambda sessions, clock, waits, states,
                        write=queue_module.record_waits:
                        written.append([w.job_id for w in waits]) or write(sessions, clock, waits, states))
    later = [submit(daemon, not_before=NOW + timedelta(days=1)) for _ in range(50)]
    daemon.schedule()  # the first round of a term reads the whole queue
    assert daemon.policy.rounds == [[]]  # all parked: the policy is asked about none of them
    assert {daemon.store.get(j.id).reason for j in later} == {"waiting for its begin time 2026-03-02 12:00 UTC"}
    assert daemon.queue.parked == 50 and [sorted(w) for w in written] == [sorted(j.id for j in later)]  # at once

    new = submit(daemon)
    daemon._round()
    assert daemon.policy.rounds[-1] == [new.id]
    assert daemon.controller.started() == [new.id]
    daemon.schedule()  # a full round: everything read again, and the parked jobs' reasons are what they were
    assert len(written) == 1

    daemon._round()  # nothing changed: the policy is not asked
    assert len(daemon.policy.rounds) == 3


def test_a_parked_job_is_offered_when_its_begin_time_comes_and_a_timer_is_armed_for_it(daemon):
    soon = submit(daemon, not_before=NOW + timedelta(hours=1))
    submit(daemon, not_before=NOW + timedelta(hours=2))
    daemon.schedule()
    # the time of the daemon's one timer (here no scheduler runs: the test asks); once armed, not again
    assert daemon.queue.wake_to_arm() == (NOW + timedelta(hours=1)).timestamp()
    assert daemon.queue.wake_to_arm() is None
    daemon.clock.advance(minutes=59)
    daemon._round()
    assert daemon.controller.started() == []
    daemon.clock.advance(minutes=1)
    daemon._round()
    assert daemon.policy.rounds[-1] == [soon.id] and daemon.controller.started() == [soon.id]
    assert daemon.queue.wake_to_arm() == (NOW + timedelta(hours=2)).timestamp()  # the other job's begin time


def test_a_dependent_job_is_woken_when_its_dependency_succeeds_and_told_when_it_never_can(daemon):
    first = submit(daemon)
    second = submit(daemon, depends_on=[first.id])
    third = submit(daemon, depends_on=[first.id])
    daemon.schedule()
    assert daemon.controller.started() == [first.id]
    daemon._round()  # the dependents' reasons follow their dependency's state
    assert daemon.store.get(second.id).reason == f"waiting for job {first.id} (running)"

    daemon.cancel(third.id)
    run = daemon.store.get(first.id).runs[0]
    daemon.store.finish_run(run.id, RunStatus.SUCCEEDED, 0, None, None, {})
    daemon.queue.came(first.id)  # as the event thread does when its run ends
    daemon._set_inventory([gpu("w0"), gpu("w1")])
    daemon._round()
    assert daemon.policy.rounds[-1] == [second.id]
    assert daemon.controller.started() == [first.id, second.id]

    failing = submit(daemon)
    waiter = submit(daemon, depends_on=[failing.id])
    daemon.cancel(failing.id)
    daemon._round()
    assert daemon.store.get(waiter.id).reason.endswith("can never be met; cancel this job")
    assert daemon.store.get(waiter.id).wait_code == Code.UNRESOLVABLE.value


def test_a_job_waiting_for_room_is_offered_again_only_when_a_gpu_frees_where_it_waits(daemon):
    daemon._set_inventory([gpu("w0", "x"), gpu("w1", "y", zone="FR")])
    waiting = submit(daemon, zones=["DE"])
    daemon.schedule()
    assert daemon.store.get(waiting.id).state == "pending"
    submit(daemon, zones=["FR"])
    daemon._round()
    assert waiting.id not in daemon.policy.rounds[-1]
    daemon._set_inventory([gpu("w0", "x"), gpu("w1", zone="FR")])  # room in FR only
    daemon._round()
    assert waiting.id not in daemon.policy.rounds[-1]
    daemon._set_inventory([gpu("w0"), gpu("w1", "z", zone="FR")])
    daemon._round()
    assert daemon.policy.rounds[-1] == [waiting.id] and waiting.id in daemon.controller.started()


def test_a_job_changed_behind_the_daemons_back_is_found_at_the_next_comparison_of_ids(daemon):
    daemon.schedule()
    behind = daemon.store.submit(daemon.store.validate("synthetic", {"steps": 10}))  # another daemon's API
    daemon._round()
    assert daemon.controller.started() == []
    daemon.monotonic.now_s += SYNC_S
    daemon._round()
    assert daemon.controller.started() == [behind.id]

    held = daemon.store.submit(daemon.store.validate("synthetic", {"steps": 10}, not_before=NOW + timedelta(hours=1)))
    daemon.monotonic.now_s += SYNC_S
    daemon._round()
    assert daemon.queue.parked == 1
    daemon.store.request_cancel(held.id)
    daemon.monotonic.now_s += SYNC_S
    daemon._round()
    assert daemon.queue.parked == 0 and daemon.queue.waiting == 0


def test_holds_of_jobs_not_offered_are_handed_back_to_the_policy(daemon):
    hold = Hold("x", ("DE",), NOW.timestamp() + 3600, NOW.timestamp() + 7200, 1, 300.0)

    class HoldEverything:
        name = "holds"

        def decide(self, snapshot):
            return [Wait(j.job_id, Status(Code.WAIT, "holds", "later", retry_at_s=snapshot.now_s + 3600),
                         replace(hold, job_id=j.job_id)) for j in snapshot.waiting]

    daemon.policy = Offered(HoldEverything())
    first = submit(daemon)
    daemon.schedule()
    second = submit(daemon)
    daemon._round()
    assert daemon.policy.rounds[-1] == [second.id]
    assert [h.job_id for h in daemon.policy.holds[-1]] == [first.id]
    assert daemon.store.get(first.id).state == "deferred"
    daemon.clock.advance(hours=1)  # both retry times come
    daemon._round()
    assert sorted(daemon.policy.rounds[-1]) == sorted([first.id, second.id]) and daemon.policy.holds[-1] == ()


def test_a_round_that_fails_half_way_reads_the_whole_queue_again(daemon, monkeypatch):
    job = submit(daemon)
    daemon.schedule()
    assert daemon.controller.started() == [job.id]
    daemon.store.finish_run(daemon.store.get(job.id).runs[0].id, RunStatus.LOST, None, "lost", None, None)
    waiting = submit(daemon)

    def broken(snapshot):
        raise RuntimeError("a policy bug")

    monkeypatch.setattr(daemon.policy, "decide", broken)
    with pytest.raises(RuntimeError):
        daemon._round()
    monkeypatch.undo()
    daemon._round()  # the lost job was never noted, but the round after a failure reads everything
    assert sorted(daemon.policy.rounds[-1]) == sorted([job.id, waiting.id])


def test_a_finished_event_notes_the_job_for_the_next_round(daemon):
    job = submit(daemon, interruptible=True, deadline=NOW + timedelta(days=1))
    daemon.schedule()
    run = daemon.store.get(job.id).runs[0]
    assert daemon.handle_event(Finished(job_id=job.id, run_id=run.id, worker_id="w0", at=NOW.timestamp(),
                                        exit_status=ExitStatus.SUSPENDED))
    daemon._round()
    assert daemon.policy.rounds[-1] == [job.id]  # suspended: it waits again


def test_new_forecasts_and_the_full_round_offer_every_job_that_may_start_but_not_the_parked_ones(daemon):
    daemon._set_inventory([gpu("w0", "x"), gpu("w1", "y")])
    waiting = submit(daemon)
    parked = submit(daemon, not_before=NOW + timedelta(hours=1))
    daemon.schedule()
    daemon._round()
    assert daemon.policy.rounds[-1] == [waiting.id] and len(daemon.policy.rounds) == 1  # then not offered again
    daemon.queue.reoffer()  # as refresh_carbon does
    daemon._round()
    assert daemon.policy.rounds[-1] == [waiting.id]
    daemon.monotonic.now_s += 300.0
    daemon._round()
    assert daemon.policy.rounds[-1] == [waiting.id] and len(daemon.policy.rounds) == 3
    assert parked.id not in {j for r in daemon.policy.rounds for j in r}


def test_waits_are_written_at_once_and_a_job_that_moved_meanwhile_is_left_alone(upgraded_db_url, tmp_path):
    from scheduler.store.engine import make_engine, make_session_factory
    from scheduler.store.jobs import JobStore
    from scheduler.store.queue import WaitRecord, record_waits, waiting_jobs

    engine = make_engine(upgraded_db_url)
    store = JobStore(make_session_factory(engine), FakeClock(NOW), tmp_path / "jobs")
    try:
        kept, deferred, cancelled = (store.submit(store.validate("synthetic", {"steps": 10})) for _ in range(3))
        states = {j.id: j.state for j in waiting_jobs(store.sessions)}
        store.request_cancel(cancelled.id)  # after the queue read it
        record_waits(store.sessions, store.clock, [
            WaitRecord(kept.id, "waiting for room", deferred=False, code="Unschedulable", plugin="fifo"),
            WaitRecord(deferred.id, "carbon: later", deferred=True, code="Wait", plugin="carbon"),
            WaitRecord(cancelled.id, "waiting for room", deferred=False, code="Unschedulable", plugin="fifo"),
        ], states)
        kept, deferred, cancelled = (store.get(j.id) for j in (kept, deferred, cancelled))
        assert (kept.state, kept.reason, kept.wait_code, kept.wait_plugin) == (
            "pending", "waiting for room", "Unschedulable", "fifo")
        assert (deferred.state, deferred.reason, deferred.wait_plugin) == ("deferred", "carbon: later", "carbon")
        assert [e.to_state for e in deferred.events] == ["pending", "deferred"]  # the change is recorded
        assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled by the user")
    finally:
        engine.dispose()


def test_the_demand_of_the_jobs_not_offered_is_handed_to_the_policy_as_the_backlog(daemon):
    class DeferEverything:
        name = "defers"

        def decide(self, snapshot):
            return [Wait(j.job_id, Status(Code.WAIT, "defers", "later", retry_at_s=snapshot.now_s + 3600))
                    for j in snapshot.waiting]

    daemon.policy = Offered(DeferEverything())
    deadline = NOW + timedelta(days=1)
    deferred = submit(daemon, deadline=deadline)
    no_deadline = submit(daemon)
    later = submit(daemon, deadline=deadline, not_before=NOW + timedelta(hours=2))
    submit(daemon, deadline=deadline, depends_on=[deferred.id])  # when it may start is not known: left out
    daemon.schedule()
    assert daemon.policy.backlogs[-1] == {later.id: (NOW + timedelta(hours=2)).timestamp()}
    new = submit(daemon, deadline=deadline)
    daemon._round()
    assert daemon.policy.rounds[-1] == [new.id]
    assert daemon.policy.backlogs[-1] == {deferred.id: (NOW + timedelta(hours=1)).timestamp(),
                                          later.id: (NOW + timedelta(hours=2)).timestamp()}
    assert no_deadline.id not in daemon.queue.backlog
    daemon.cancel(deferred.id)
    daemon._round()
    assert deferred.id not in daemon.queue.backlog and new.id in daemon.queue.backlog
