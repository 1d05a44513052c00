"""Two daemons on one database, on one local Ray: one schedules, the other stands by and takes over when the
first stops, without requeuing the run the first started."""

from __future__ import annotations

import pytest

from daemon_fixtures import JOB_TIMEOUT_S, poll, running_daemon, synthetic_job, wait_until_running

pytestmark = [pytest.mark.ray, pytest.mark.slow]

#: Short enough that a test does not wait long for an expired lease, long enough for a loaded machine's renewals.
LEASE = {"leader_lease_s": 4.0, "leader_renew_s": 0.5}


def test_a_second_daemon_stands_by_and_takes_over_the_first_ones_running_job(tmp_path):
    from scheduler.client import Client
    from scheduler.daemon.daemon import Daemon

    with running_daemon(tmp_path, **LEASE) as first:
        leader = Client(url=first.url, token=first.token, timeout_s=60)
        job = leader.submit("synthetic", synthetic_job(20.0))
        job = wait_until_running(leader, job)
        [run] = job.runs

        second = Daemon(first.settings).start()  # the same database and Ray, a port of its own
        try:
            standby = Client(url=second.url, token=second.token, timeout_s=60)
            assert (first.role, second.role) == ("leader", "standby")
            assert standby.status()["role"] == "standby" and leader.status()["role"] == "leader"
            assert standby.get(job.id).state == "running"  # it serves the API's reads

            first.stop()  # the daemon, not its job
            poll(lambda: second.role == "leader", timeout_s=60, what="the standby takes over")
            assert standby.status()["role"] == "leader"
            taken_over = standby.get(job.id)
            assert (taken_over.state, [r.id for r in taken_over.runs]) == ("running", [run.id])

            done = standby.wait(job.id, timeout=JOB_TIMEOUT_S)
            assert done.state == "succeeded", done.raw
            assert [(r.id, r.exit_status) for r in done.runs] == [(run.id, "succeeded")]  # recorded once
        finally:
            second.stop()
