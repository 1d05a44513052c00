"""A running daemon loses its controller actor and gets it back, on real Ray with logical GPUs.

First the link alone (one re-acquire per outage, bounded retries), then a whole daemon whose controller is killed
while a job runs: the lost run is recorded, its job runs again on the new controller, and new jobs run too.
"""

from __future__ import annotations

import logging
import os
import uuid

import pytest

ray = pytest.importorskip("ray")

from daemon_fixtures import (  # noqa: E402, F401  (fixtures)
    JOB_TIMEOUT_S,
    SHORT_JOB,
    client,
    daemon,
    poll,
    synthetic_job,
    wait_until_running,
)
from scheduler.cluster.controller import get_controller, get_or_create_controller, shutdown_controller  # noqa: E402
from scheduler.cluster.link import RETRY_FIRST_S, RETRY_MAX_S, ControllerLink, controller_lost  # noqa: E402
from scheduler.daemon.daemon import LOST_WITH_CONTROLLER  # noqa: E402
from scheduler.errors import ControllerError, ControllerUnavailable  # noqa: E402
from scheduler.cli.tables import render_status  # noqa: E402

pytestmark = pytest.mark.ray

# Still running when the controller is killed; its lost run's process runs on to its end, and the job's next run
# waits for that (one process per job workdir), so it is not much longer.
SECONDS_JOB = synthetic_job(5.0)


class LinkParts:
    """A link to a controller of a namespace of its own (on the daemon's Ray), with what the test controls:
    its clock (``now_s``), the handles it acquired, and an error to refuse the next acquisitions with."""

    def __init__(self):
        self.namespace = f"wattsched-outage-{uuid.uuid4().hex[:8]}"
        self.now_s = 0.0
        self.acquired = []
        self.refuse: Exception | None = None
        self.link = ControllerLink(self.acquire, monotonic=lambda: self.now_s)

    def acquire(self):
        if self.refuse is not None:
            raise self.refuse
        self.acquired.append(get_or_create_controller(namespace=self.namespace))
        return self.acquired[-1]


@pytest.fixture
def parts(daemon):
    parts = LinkParts()
    parts.link.connect()
    yield parts
    shutdown_controller(namespace=parts.namespace)


def link_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "scheduler.cluster.link" and r.levelno >= logging.WARNING]


def kill(handle) -> None:
    """Kill a controller actor and wait until it is dead (ray.kill only asks for it)."""
    ray.kill(handle, no_restart=True)

    def dead():
        try:
            ray.get(handle.info.remote(), timeout=JOB_TIMEOUT_S)
        except ray.exceptions.RayActorError:
            return True
        return False

    poll(dead, what="the killed controller is dead")


def test_only_the_loss_of_the_actor_itself_is_an_outage():
    died = ray.exceptions.ActorDiedError()
    # what the controller raises when one of its own workers died: an answer, though an ActorDiedError too
    raised_by_the_controller = ray.exceptions.RayTaskError("start_job", "traceback", died).as_instanceof_cause()
    assert isinstance(raised_by_the_controller, ray.exceptions.ActorDiedError)
    cases = [(died, True), (ray.exceptions.ActorUnavailableError("unreachable", None), True),
             (ray.exceptions.GetTimeoutError(), True), (raised_by_the_controller, False),
             (ControllerError("worker busy"), False)]
    assert [controller_lost(exc) for exc, _ in cases] == [lost for _, lost in cases]


def test_one_reacquire_per_outage_however_many_calls_fail(parts, caplog):
    link = parts.link
    first_epoch = link.epoch
    assert link.health() == {"state": "ok", "epoch": first_epoch}
    kill(link.handle)

    for method in ("info", "running", "inventory", "info"):
        with pytest.raises(ControllerUnavailable, match="the daemon is getting it back"):
            link.call(method)
    assert len(link_warnings(caplog)) == 1 and "unavailable" in link_warnings(caplog)[0]
    health = link.health()
    assert health["state"] == "unavailable" and "ActorDiedError" in health["reason"]

    assert not link.reacquire() and len(parts.acquired) == 1  # not before its retry time
    parts.now_s += RETRY_FIRST_S
    assert link.reacquire() and len(parts.acquired) == 2
    assert link.epoch != first_epoch and link.call("info")["epoch"] == link.epoch
    assert not link.reacquire() and len(parts.acquired) == 2  # no outage, nothing to get back

    # A call that began on the dead handle and fails only now does not start another outage.
    link._lost(parts.acquired[0], ray.exceptions.ActorDiedError())
    assert link.health()["state"] == "ok"


def test_retries_back_off_up_to_a_bound_while_the_controller_cannot_be_had(parts, caplog):
    link = parts.link
    kill(link.handle)
    with pytest.raises(ControllerUnavailable):
        link.call("info")
    parts.refuse = ControllerError("no room for the controller on the head node")
    caplog.clear()

    waits_s = []
    for _ in range(10):
        parts.now_s += link.retry_in_s()
        assert not link.reacquire()
        waits_s.append(link.retry_in_s())
    assert waits_s[:3] == [2 * RETRY_FIRST_S, 4 * RETRY_FIRST_S, 8 * RETRY_FIRST_S]
    assert max(waits_s) == waits_s[-1] == RETRY_MAX_S
    assert len(link_warnings(caplog)) == 1  # the first failed attempt; later ones only at debug level
    assert link.health()["attempts"] == 10

    parts.refuse = None
    parts.now_s += link.retry_in_s()
    assert link.reacquire() and link.health()["state"] == "ok"


def test_a_running_daemon_gets_a_lost_controller_back_and_runs_the_lost_job_again(daemon, client):
    job = wait_until_running(client, client.submit("synthetic", SECONDS_JOB))
    lost = daemon.controller.handle
    lost_epoch = daemon.controller.epoch
    pid = next(r["pid"] for r in ray.get(lost.running.remote()) if r["job_id"] == job.id)

    ray.kill(lost, no_restart=True)

    job = client.wait(job.id, timeout=JOB_TIMEOUT_S)
    assert job.state == "succeeded", job.raw
    record = daemon.store.get(job.id)
    assert [r.status for r in record.runs] == ["lost", "succeeded"]
    assert record.runs[0].message == LOST_WITH_CONTROLLER
    assert ("pending", f"{LOST_WITH_CONTROLLER}; queued again") in [(e.to_state, e.reason) for e in record.events]
    # the daemon uses the controller now registered under the name, a new one
    assert daemon.controller.epoch != lost_epoch
    assert ray.get(get_controller().info.remote())["epoch"] == daemon.controller.epoch
    assert client.status()["controller"] == {"state": "ok", "epoch": daemon.controller.epoch}
    assert "controller: ok" in render_status(client.status())
    poll(lambda: not _alive(pid), what=f"the lost run's process {pid} exits")

    after = client.wait(client.submit("synthetic", SHORT_JOB).id, timeout=JOB_TIMEOUT_S)
    assert after.state == "succeeded", after.raw
    assert [r.status for r in daemon.store.get(after.id).runs] == ["succeeded"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
