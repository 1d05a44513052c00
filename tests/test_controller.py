"""The controller on real Ray: one node with two logical GPUs, then a two-node cluster (zones DE and FR).

Jobs are ``synthetic`` runs (paced steps that checkpoint, no torch) in child processes. Tests wait on
``fetch_events`` (a long poll), never sleep.
Each class starts its own Ray, because a single-node instance and a multi-node cluster cannot share a driver.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

ray = pytest.importorskip("ray")

from scheduler.cluster.controller import (  # noqa: E402
    get_controller,
    get_or_create_controller,
    shutdown_controller,
)
from daemon_fixtures import ENDLESS_JOB, SHORT_JOB  # noqa: E402
from scheduler.errors import ConfigError, ControllerError  # noqa: E402
from workers.events import Finished, Progress, WorkerEvent  # noqa: E402
from workers.kinds.synthetic import CHECKPOINT_FILE, read_checkpoint  # noqa: E402

pytestmark = pytest.mark.ray

# The grace is generous, so that no stop on a busy machine is ever SIGKILLed (a killed job's exit code is not 143).
OPTIONS = {"logical_zones": ("DE", "FR"), "sample_interval_s": 0.25, "cancel_grace_s": 120.0}
# Generous: it only bounds a test that fails, and a busy machine slows Ray and job processes down many times.
TIMEOUT_S = 240


class Events:
    """Reads a controller's event log from where it stood when created, the way the daemon does."""

    def __init__(self, controller):
        self.controller = controller
        self.after = ray.get(controller.info.remote())["last_seq"]
        self.seen: list[WorkerEvent] = []

    def wait(self, predicate, timeout_s: float = TIMEOUT_S) -> WorkerEvent:
        """The first event (already seen or new) that satisfies ``predicate``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            match = next((e for e in self.seen if predicate(e)), None)
            if match is not None:
                return match
            left = deadline - time.monotonic()
            assert left > 0, f"no matching event within {timeout_s} s; seen: {[self.brief(e) for e in self.seen]}"
            batch = ray.get(self.controller.fetch_events.remote(self.after, min(left, 10.0)))
            for seq, event in batch:
                self.after = seq
                self.seen.append(event)
            if batch:
                ray.get(self.controller.ack_events.remote(self.after))

    def finished(self, job_id: str, timeout_s: float = TIMEOUT_S) -> Finished:
        return self.wait(lambda e: e.type == "finished" and e.job_id == job_id, timeout_s)

    def of(self, job_id: str) -> list[WorkerEvent]:
        return [e for e in self.seen if e.job_id == job_id]

    @staticmethod
    def brief(event: WorkerEvent) -> tuple:
        return event.type, event.job_id, getattr(event, "exit_status", None), getattr(event, "error", None)


def note(n: int) -> Progress:
    """A progress event of a job the controller does not run: it is only logged."""
    return Progress(job_id="none", run_id="none", at=float(n), progress={"n": n})


def start(controller, job_id, kind, spec, worker_ids, workdir, **kwargs) -> None:
    ray.get(
        controller.start_job.remote(job_id, f"{job_id}-r1", kind, spec, worker_ids, str(workdir), **kwargs)
    )


# --- one node, two logical GPUs ------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def one_node():
    namespace = f"wattsched-test-{uuid.uuid4().hex[:8]}"
    ray.init(num_cpus=2, num_gpus=2, namespace=namespace, include_dashboard=False, logging_level="WARNING")
    controller = get_or_create_controller(OPTIONS, namespace=namespace)
    yield controller, namespace
    shutdown_controller(namespace=namespace)
    ray.shutdown()


class TestOneNode:
    def test_one_worker_per_logical_gpu(self, one_node):
        controller, namespace = one_node
        inventory = ray.get(controller.sync_workers.remote())
        node = ray.get_runtime_context().get_node_id()
        assert [w["worker_id"] for w in inventory] == [f"{node[:8]}-gpu0", f"{node[:8]}-gpu1"]
        assert sorted(g for w in inventory for g in w["gpu_ids"]) == [0, 1]
        assert [w["zone"] for w in inventory] == ["DE", "FR"]  # logical_zones, round-robin
        for worker in inventory:
            assert worker["node_id"] == node and worker["logical"] and worker["busy_job"] is None
            assert worker["gpu_name"] == "A100-SXM4-40GB" and worker["max_power_w"] > worker["idle_power_w"]
        assert ray.get(controller.sync_workers.remote()) == inventory  # idempotent
        # Attaching again gives the same controller (other options would be applied to it: see
        # test_operator_controller_options.py).
        again = get_or_create_controller(OPTIONS, namespace=namespace)
        assert ray.get(again.info.remote())["epoch"] == ray.get(controller.info.remote())["epoch"]

    def test_bad_options_and_missing_controller(self, one_node):
        with pytest.raises(ConfigError, match="unknown controller options"):
            get_or_create_controller({"zones": ["DE"]}, namespace="elsewhere")
        with pytest.raises(ControllerError, match="start the daemon"):
            get_controller(namespace="elsewhere")

    def test_fetch_waits_and_unacknowledged_events_return(self, one_node):
        controller, _ = one_node
        last = ray.get(controller.info.remote())["last_seq"]
        for n in (1, 2):
            ray.get(controller.report.remote(note(n)))
        batch = ray.get(controller.fetch_events.remote(last, 0))
        assert [(seq, e.progress["n"]) for seq, e in batch] == [(last + 1, 1), (last + 2, 2)]
        # Not acknowledged: a daemon that crashed before committing gets them again.
        assert ray.get(controller.fetch_events.remote(last, 0)) == batch
        assert ray.get(controller.ack_events.remote(last + 1)) >= 1
        assert [seq for seq, _ in ray.get(controller.fetch_events.remote(last, 0))] == [last + 2]

        # A long poll waits while there is nothing new, and answers as soon as an event arrives: with the event,
        # long before its own 600 s are up (had it not woken, the get would time out first).
        poll = controller.fetch_events.remote(last + 2, 600)
        ready, _ = ray.wait([poll], timeout=0.5)
        assert not ready
        ray.get(controller.report.remote(note(3)))
        assert [e.progress["n"] for _, e in ray.get(poll, timeout=TIMEOUT_S)] == [3]

        asked = time.monotonic()
        assert ray.get(controller.fetch_events.remote(last + 3, 0.3)) == []
        assert time.monotonic() - asked >= 0.3
        ray.get(controller.ack_events.remote(last + 3))
        assert ray.get(controller.info.remote())["pending_events"] == 0

    def test_jobs_run_to_the_end_and_busy_workers_refuse(self, one_node, tmp_path):
        controller, _ = one_node
        events = Events(controller)
        w0, w1 = (w["worker_id"] for w in ray.get(controller.inventory.remote()))

        with pytest.raises(ControllerError, match="unknown or not ready"):
            start(controller, "ghost", "synthetic", SHORT_JOB, ["no-such-worker"], tmp_path / "g")

        # One job on both GPUs: the first worker runs it with both ids, the second is held.
        start(controller, "train", "synthetic", SHORT_JOB, [w0, w1], tmp_path / "train")
        assert {w["busy_job"] for w in ray.get(controller.inventory.remote())} == {"train"}
        assert [(j["job_id"], j["worker_ids"]) for j in ray.get(controller.running.remote())] == [
            ("train", [w0, w1])
        ]
        with pytest.raises(ControllerError, match="busy"):
            start(controller, "refused", "synthetic", SHORT_JOB, [w1], tmp_path / "refused")

        done = events.finished("train")
        assert done.exit_status == "succeeded", done.error
        started = events.wait(lambda e: e.type == "started" and e.job_id == "train")
        assert sorted(started.gpu_ids) == [0, 1] and started.worker_id == w0
        assert done.energy.gpu_energy_j > 0 and done.energy.gpu_method == "simulated"
        samples = [s for e in events.of("train") if e.type != "started" for s in e.samples]
        assert len(samples) >= 2
        assert all(w["busy_job"] is None for w in ray.get(controller.inventory.remote()))
        assert ray.get(controller.running.remote()) == []

        # A job that runs and one whose checkpoint cannot be read, side by side.
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / CHECKPOINT_FILE).write_text("not json")
        start(controller, "sample", "synthetic", SHORT_JOB, [w0], tmp_path / "s")
        start(controller, "bad", "synthetic", SHORT_JOB, [w1], tmp_path / "b")
        good, bad = events.finished("sample"), events.finished("bad")
        assert good.exit_status == "succeeded", good.error
        assert good.energy.gpu_energy_j > 0 and good.energy.gpu_method == "simulated"
        assert bad.exit_status == "failed" and CHECKPOINT_FILE in bad.error and "cannot be read" in bad.error
        assert ray.get(controller.running.remote()) == []

    def test_cancel_stops_a_job_at_a_checkpoint_with_its_energy(self, one_node, tmp_path):
        controller, _ = one_node
        events = Events(controller)
        worker = ray.get(controller.inventory.remote())[0]["worker_id"]
        start(controller, "long", "synthetic", ENDLESS_JOB, [worker], tmp_path / "long")
        events.wait(lambda e: e.type == "progress" and e.job_id == "long" and e.progress)
        assert ray.get(controller.cancel_job.remote("long")) is True
        done = events.finished("long")
        assert done.exit_status == "cancelled" and done.energy.gpu_energy_j > 0
        # 143: within the grace it checkpointed and stopped on SIGTERM, rather than being killed
        assert done.exit_code == 143 and done.result["stopped"] is True
        assert read_checkpoint(tmp_path / "long" / CHECKPOINT_FILE) == done.result["steps_done"]
        assert ray.get(controller.cancel_job.remote("long")) is False
        assert ray.get(controller.running.remote()) == []

    def test_another_driver_attaches_and_a_detached_controller_outlives_its_creator(self, one_node):
        controller, namespace = one_node
        # The explicit address: address='auto' may find another Ray instance running on the same machine.
        address = ray.get_runtime_context().gcs_address
        code = (
            "import ray, sys\n"
            "from scheduler.cluster.controller import get_controller, get_or_create_controller\n"
            f"ray.init(address={address!r}, namespace={namespace!r}, logging_level='ERROR')\n"
            f"print(ray.get(get_controller(namespace={namespace!r}).info.remote())['epoch'])\n"
            f"second = get_or_create_controller(name='second', namespace={namespace!r})\n"
            "print(ray.get(second.info.remote())['epoch'])\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT_S)
        assert out.returncode == 0, out.stderr[-2000:]
        main_epoch, second_epoch = out.stdout.split()[-2:]
        assert main_epoch == ray.get(controller.info.remote())["epoch"]
        second = get_controller(name="second", namespace=namespace)  # its creator has exited
        assert ray.get(second.info.remote())["epoch"] == second_epoch
        assert shutdown_controller(name="second", namespace=namespace) is True


# --- two nodes, zones DE and FR ------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    de = cluster.add_node(num_cpus=1, num_gpus=1, labels={"wattsched.io/zone": "DE"})
    fr = cluster.add_node(num_cpus=1, num_gpus=1, labels={"wattsched.io/zone": "FR"})
    cluster.wait_for_nodes()
    namespace = f"wattsched-test-{uuid.uuid4().hex[:8]}"
    ray.init(address=cluster.address, namespace=namespace, logging_level="WARNING")
    controller = get_or_create_controller({"sample_interval_s": 0.25}, namespace=namespace)
    yield cluster, controller, {"DE": de, "FR": fr}
    shutdown_controller(namespace=namespace)
    ray.shutdown()
    cluster.shutdown()


class TestTwoNodes:
    def test_zones_come_from_node_labels_and_jobs_run_where_asked(self, two_nodes, tmp_path):
        _, controller, nodes = two_nodes
        inventory = ray.get(controller.sync_workers.remote())
        by_zone = {w["zone"]: w for w in inventory}
        assert sorted(by_zone) == ["DE", "FR"] and len(inventory) == 2
        assert {z: w["node_id"] for z, w in by_zone.items()} == {z: n.node_id for z, n in nodes.items()}

        events = Events(controller)
        start(controller, "in-fr", "synthetic", SHORT_JOB, [by_zone["FR"]["worker_id"]], tmp_path / "fr")
        started = events.wait(lambda e: e.type == "started" and e.job_id == "in-fr")
        assert started.node_id == nodes["FR"].node_id
        done = events.finished("in-fr")
        assert done.exit_status == "succeeded", done.error

        with pytest.raises(ControllerError, match="span nodes"):
            start(controller, "split", "synthetic", SHORT_JOB, sorted(by_zone[z]["worker_id"] for z in by_zone),
                  tmp_path / "split")

    def test_a_lost_node_loses_its_job_and_its_workers(self, two_nodes, tmp_path):
        cluster, controller, nodes = two_nodes
        # the controller lives on the head node, so losing a GPU node cannot take it along
        where = ray.get(controller.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))
        assert where == cluster.head_node.node_id
        events = Events(controller)
        de_worker = next(w for w in ray.get(controller.inventory.remote()) if w["zone"] == "DE")["worker_id"]
        start(controller, "doomed", "synthetic", ENDLESS_JOB, [de_worker], tmp_path / "doomed")
        started = events.wait(lambda e: e.type == "started" and e.job_id == "doomed")
        events.wait(lambda e: e.type == "progress" and e.job_id == "doomed" and e.samples)
        try:
            cluster.remove_node(nodes["DE"])
            inventory = ray.get(controller.sync_workers.remote())
            assert [w["zone"] for w in inventory] == ["FR"]
            lost = events.finished("doomed")
            assert lost.exit_status == "lost" and nodes["DE"].node_id in lost.error
            assert lost.energy_partial and lost.energy.gpu_energy_j > 0
            assert ray.get(controller.running.remote()) == []
        finally:
            # The job's process lives in its own session, so it outlives its node's Ray processes here.
            try:
                os.kill(started.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
