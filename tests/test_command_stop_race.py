"""A stop that arrives before the job's processes exist is kept and applied, never dropped (real Ray, two logical
GPUs): at the worker, a cancel that comes while it launches the job; at the controller, a cancel that overtakes
the daemon's own start_job. Either way nothing is started and the run ends ``cancelled``.

Before, the worker answered False to such a cancel (no process yet), the daemon ignored the answer, and the job
ran on.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from scheduler.cluster.controller import get_or_create_controller, shutdown_controller  # noqa: E402
from workers.kinds import KindRegistry  # noqa: E402
from workers.kinds.command import Command  # noqa: E402
from workers.worker import GpuWorker  # noqa: E402

pytestmark = pytest.mark.ray

SINK = "test-stop-race-sink"
#: Bounds a test that fails; a busy machine slows Ray down many times.
TIMEOUT_S = 240


class EventSink:
    """Stands in for the controller: keeps the events a worker reports and wakes whoever waits for one."""

    def __init__(self):
        self.events: list = []
        self.changed = threading.Condition()

    def report(self, event) -> int:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()
            return len(self.events)

    def wait_finished(self, job_id: str, timeout_s: float):
        def found():
            return next((e for e in self.events if e.job_id == job_id and e.type == "finished"), None)

        with self.changed:
            self.changed.wait_for(found, timeout=timeout_s)
            return found()

    def types(self, job_id: str) -> list[str]:
        with self.changed:
            return [e.type for e in self.events if e.job_id == job_id]


class GatedCommand(Command):
    """A command whose launch waits, before it starts any process, until a gate file exists: it holds the launch
    in the window where a cancel used to be dropped. It writes ``entered`` next to the gate once it waits."""

    name = "gated-command"

    def validate(self, spec: Any) -> dict[str, Any]:
        return {**Command().validate({k: v for k, v in spec.items() if k != "gate"}), "gate": spec["gate"]}

    def argv(self, spec):
        import os

        gate = spec["gate"]
        open(gate + ".entered", "w").close()
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
        return super().argv(spec)


@pytest.fixture(scope="module")
def ray_local():
    # The sink and the gated kind live in this module, which Ray's workers cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    namespace = f"wattsched-test-{uuid.uuid4().hex[:8]}"
    ray.init(num_cpus=2, num_gpus=2, namespace=namespace, include_dashboard=False, logging_level="WARNING")
    yield namespace
    ray.shutdown()


def wait_for_path(path, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.02)


def marker_command(marker) -> list[str]:
    """A command that leaves ``marker`` behind if it ever runs."""
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]


def test_a_cancel_that_reaches_the_worker_while_it_launches_is_applied(ray_local, tmp_path):
    sink = ray.remote(EventSink).options(name=SINK, max_concurrency=8, num_cpus=0).remote()
    worker = (ray.remote(GpuWorker).options(num_gpus=1, num_cpus=0, max_concurrency=4)
              .remote("w-race", SINK, ray_local, {"sample_interval_s": 0.25},
                      kinds=KindRegistry([GatedCommand()])))
    try:
        gate, marker = tmp_path / "gate", tmp_path / "ran"
        job = {"job_id": "race", "run_id": "race-r1", "kind": "gated-command",
               "spec": {"argv": marker_command(marker), "gate": str(gate)}, "workdir": str(tmp_path / "job")}
        started = worker.start.remote(job)
        wait_for_path(tmp_path / "gate.entered")  # the launch has begun; no process exists yet
        assert ray.get(worker.cancel.remote("race"), timeout=TIMEOUT_S) is True  # kept, not dropped
        gate.write_text("open")
        ray.get(started, timeout=TIMEOUT_S)
        finished = ray.get(sink.wait_finished.remote("race", TIMEOUT_S))
        assert finished is not None, ray.get(sink.types.remote("race"))
        assert finished.exit_status.value == "cancelled" and finished.error is None
        assert ray.get(sink.types.remote("race")) == ["finished"]  # never started
        assert not marker.exists()
        assert ray.get(worker.busy.remote()) is None
    finally:
        ray.kill(worker)
        ray.kill(sink)


def test_a_cancel_that_overtakes_its_start_job_is_applied_when_the_job_starts(ray_local, tmp_path):
    controller = get_or_create_controller({"sample_interval_s": 0.25}, namespace=ray_local)
    try:
        [lead, *_] = ray.get(controller.sync_workers.remote(), timeout=TIMEOUT_S)
        after = ray.get(controller.info.remote())["last_seq"]
        # The daemon's cancel arrives first: the controller runs no such job yet, and says so, but keeps the stop.
        assert ray.get(controller.cancel_job.remote("early", "suspended")) is False
        marker = tmp_path / "ran"
        ray.get(controller.start_job.remote("early", "early-r1", "command", {"argv": marker_command(marker)},
                                            [lead["worker_id"]], str(tmp_path / "job")), timeout=TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        events = []
        while not any(e.type == "finished" for e in events):
            left = deadline - time.monotonic()
            assert left > 0, f"no finished event for the job: {events}"
            for seq, event in ray.get(controller.fetch_events.remote(after, min(left, 10.0))):
                after = seq
                if event.job_id == "early":
                    events.append(event)
        assert [e.type for e in events] == ["finished"]
        assert events[0].exit_status.value == "suspended"
        assert not marker.exists()
        assert ray.get(controller.running.remote()) == []
    finally:
        shutdown_controller(namespace=ray_local)
