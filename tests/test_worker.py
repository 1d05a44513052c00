"""GpuWorker on a real local Ray with two logical GPUs, running jobs in child processes: ``synthetic`` ones (paced
steps that checkpoint, no torch), and a real (tiny) diffusion training and sampling in one test.

The worker reports to a stand-in controller, ``EventSink``, that implements the one method workers call
(``report``) and lets the test wait for an event instead of sleeping.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

import pytest

ray = pytest.importorskip("ray")

from daemon_fixtures import ENDLESS_JOB, SHORT_JOB  # noqa: E402
from workers.events import CapMode, PowerCap  # noqa: E402
from workers.kinds.synthetic import CHECKPOINT_FILE, read_checkpoint  # noqa: E402
from workers.worker import GpuWorker  # noqa: E402

pytestmark = pytest.mark.ray

SINK = "test-event-sink"
TRAIN_SPEC = {"image_size": 8, "steps": 10, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 5}
# A synthetic job that keeps a core busy for a few seconds (no sleep between its steps), so its simulated GPU draws
# well above idle: what a power cap has to clip.
BUSY_JOB = {"steps": 5_000_000, "step_s": 0, "checkpoint_every": 1_000_000}
# Generous: it only bounds a test that fails, and a busy machine slows Ray and job processes down many times.
TIMEOUT_S = 240
# Generous too, so that no stop on a busy machine is ever SIGKILLed: a job that ignored SIGTERM would still be killed,
# and its exit code (-9, not 143) fails the tests that cancel.
CANCEL_GRACE_S = 120.0


class EventSink:
    """Stands in for the controller: keeps the events a worker reports and wakes whoever waits for one."""

    def __init__(self):
        self.events: list = []  # workers.events
        self.changed = threading.Condition()

    def report(self, event) -> int:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()
            return len(self.events)

    def wait_for(self, job_id: str, predicate, timeout_s: float):
        """The first event of ``job_id`` for which ``predicate(event)`` holds, or None after ``timeout_s``."""

        def found():
            return next((e for e in self.events if e.job_id == job_id and predicate(e)), None)

        with self.changed:
            self.changed.wait_for(found, timeout=timeout_s)
            return found()

    def of(self, job_id: str) -> list:
        with self.changed:
            return [e for e in self.events if e.job_id == job_id]


@pytest.fixture(scope="module")
def ray_local():
    # The sink class lives in this test module, which Ray's worker processes cannot import: ship it by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(
        num_cpus=2,
        num_gpus=2,
        namespace=f"wattsched-test-{uuid.uuid4().hex[:8]}",
        include_dashboard=False,
        labels={"wattsched.io/zone": "FR"},
        logging_level="WARNING",
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sink(ray_local):
    handle = ray.remote(EventSink).options(name=SINK, max_concurrency=8, num_cpus=0).remote()
    ray.get(handle.of.remote("nothing"))
    return handle


def make_worker(worker_id: str, **options):
    options = {"sample_interval_s": 0.25, "cancel_grace_s": CANCEL_GRACE_S, **options}
    namespace = ray.get_runtime_context().namespace
    return (
        ray.remote(GpuWorker)
        .options(num_gpus=1, num_cpus=0, max_concurrency=4)
        .remote(worker_id, SINK, namespace, options)
    )


@pytest.fixture(scope="module")
def workers(sink):
    handles = [make_worker("w0"), make_worker("w1")]
    ray.get([h.busy.remote() for h in handles])
    yield handles
    for h in handles:
        ray.get(h.shutdown.remote(1.0))
        ray.kill(h)


def job(job_id: str, kind: str, spec: dict, workdir, gpu_ids=None) -> dict:
    return {
        "job_id": job_id,
        "run_id": f"{job_id}-r1",
        "kind": kind,
        "spec": spec,
        "workdir": str(workdir),
        "gpu_ids": gpu_ids,
        "power_cap_w": None,
    }


def finished(sink, job_id: str, timeout_s: float = TIMEOUT_S):
    event = ray.get(sink.wait_for.remote(job_id, lambda e: e.type == "finished", timeout_s))
    assert event is not None, f"no finished event for {job_id}: {ray.get(sink.of.remote(job_id))}"
    return event


def test_worker_module_does_not_import_torch():
    code = "import sys, workers.worker; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_describe_logical_gpu(workers):
    infos = ray.get([w.describe.remote() for w in workers])
    assert [i["worker_id"] for i in infos] == ["w0", "w1"]
    assert sorted(g for i in infos for g in i["gpu_ids"]) == [0, 1]
    for info in infos:
        assert info["node_id"] == ray.get_runtime_context().get_node_id()
        assert info["zone"] == "FR"  # the node label wins over any configured zone
        assert info["logical"] is True
        assert info["gpu_name"] == "A100-SXM4-40GB"
        assert info["max_power_w"] > info["idle_power_w"] > 0
    assert ray.get(workers[0].busy.remote()) is None


def test_train_then_sample_report_simulated_energy(workers, sink, tmp_path):
    w0 = workers[0]
    gpu_ids = ray.get(w0.describe.remote())["gpu_ids"]
    ray.get(w0.start.remote(job("train-1", "diffusion-train", TRAIN_SPEC, tmp_path / "train", gpu_ids)))
    done = finished(sink, "train-1")
    assert done.exit_status == "succeeded", done.error
    assert done.exit_code == 0 and isinstance(done.result, dict)
    energy = done.energy
    assert energy.gpu_energy_j > 0 and energy.gpu_method == "simulated"
    assert energy.cpu_energy_j > 0 and energy.duration_s > 0
    events = ray.get(sink.of.remote("train-1"))
    started = events[0]
    assert started.type == "started" and list(started.gpu_ids) == gpu_ids and started.pid > 0
    assert started.gpu_method == "simulated" and started.worker_id == "w0"
    assert [e.type for e in events].count("finished") == 1 and events[-1] is not started
    samples = [s for e in events if e.type in ("progress", "finished") for s in e.samples]
    assert len(samples) >= 2 and all(len(s) == 5 for s in samples)
    assert samples[-1][3] == pytest.approx(energy.gpu_energy_j, rel=0.05)  # cumulative GPU energy
    # The child's output is kept for users.
    assert (tmp_path / "train" / "events.jsonl").read_text().count('"event": "result"') == 1
    assert (tmp_path / "train" / "stderr.log").exists()
    assert ray.get(w0.busy.remote()) is None

    spec = {"checkpoint": str(tmp_path / "train"), "sampler": "ddim", "num_inference_steps": 5, "num_images": 4}
    ray.get(w0.start.remote(job("sample-1", "diffusion-sample", spec, tmp_path / "sample")))
    done = finished(sink, "sample-1")
    assert done.exit_status == "succeeded", done.error
    assert done.energy.gpu_energy_j > 0 and done.energy.gpu_method == "simulated"


def test_failing_job_reports_the_error(workers, sink, tmp_path):
    workdir = tmp_path / "bad"
    workdir.mkdir()
    (workdir / CHECKPOINT_FILE).write_text("not json")  # a checkpoint the job cannot resume from
    ray.get(workers[1].start.remote(job("bad-job", "synthetic", SHORT_JOB, workdir)))
    done = finished(sink, "bad-job")
    assert done.exit_status == "failed" and done.exit_code == 1
    assert CHECKPOINT_FILE in done.error and "cannot be read" in done.error
    assert done.energy.gpu_method == "simulated"


def test_launch_failure_is_reported_not_lost(workers, sink, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    ray.get(workers[1].start.remote(job("no-dir", "synthetic", SHORT_JOB, blocker / "workdir")))
    done = finished(sink, "no-dir")
    assert done.exit_status == "failed" and "could not launch" in done.error
    assert [e.type for e in ray.get(sink.of.remote("no-dir"))] == ["finished"]
    assert ray.get(workers[1].busy.remote()) is None


def test_busy_worker_refuses_and_cancel_stops_a_job_at_a_checkpoint(workers, sink, tmp_path):
    w1 = workers[1]
    ray.get(w1.start.remote(job("long", "synthetic", ENDLESS_JOB, tmp_path / "long")))
    assert ray.get(w1.busy.remote()) == "long"
    with pytest.raises(ray.exceptions.RayTaskError, match="running job long"):
        ray.get(w1.start.remote(job("second", "synthetic", SHORT_JOB, tmp_path / "second")))
    assert ray.get(w1.cancel.remote("some-other-job")) is False

    # Cancel once the job really runs (the child has reported a step), so the checkpoint path is exercised.
    progressed = ray.get(
        sink.wait_for.remote("long", lambda e: e.type == "progress" and e.progress, TIMEOUT_S)
    )
    assert progressed is not None, ray.get(sink.of.remote("long"))
    assert ray.get(w1.cancel.remote("long")) is True
    assert ray.get(w1.cancel.remote("long")) is True  # asking twice must not kill it mid-checkpoint
    done = finished(sink, "long")
    # 143: it stopped on SIGTERM within the grace, not on SIGKILL, and its checkpoint says where
    assert done.exit_status == "cancelled" and done.exit_code == 143
    assert done.result["stopped"] is True and done.result["steps_done"] >= 1
    assert read_checkpoint(tmp_path / "long" / CHECKPOINT_FILE) == done.result["steps_done"]
    assert done.energy.gpu_energy_j > 0 and done.energy.gpu_method == "simulated"
    assert ray.get(w1.busy.remote()) is None


def test_power_cap_on_a_logical_gpu_clips_the_simulated_draw(workers, sink, tmp_path):
    capped = {**job("capped", "synthetic", BUSY_JOB, tmp_path / "capped"), "power_cap_w": 100.0}
    ray.get(workers[0].start.remote(capped))
    done = finished(sink, "capped")
    assert done.exit_status == "succeeded", done.error
    started = ray.get(sink.of.remote("capped"))[0]
    assert started.power_cap == done.power_cap == PowerCap(100.0, 100.0, CapMode.SIMULATED)
    samples = [s for e in ray.get(sink.of.remote("capped")) if e.type in ("progress", "finished")
               for s in e.samples]
    assert samples and max(s[1] for s in samples) <= 100.0 + 1e-6  # GPU power never above the cap
    assert ray.get(workers[0].busy.remote()) is None


def test_a_paced_job_on_a_logical_gpu_still_cancels_promptly(workers, sink, tmp_path):
    """A capped job's process is stopped part of the time; a cancel must still get through at once."""
    paced = {**job("paced", "synthetic", ENDLESS_JOB, tmp_path / "paced"), "power_cap_w": 200.0, "speed": 0.5}
    ray.get(workers[0].start.remote(paced))
    progressed = ray.get(
        sink.wait_for.remote("paced", lambda e: e.type == "progress" and e.progress, TIMEOUT_S))
    assert progressed is not None, ray.get(sink.of.remote("paced"))
    assert ray.get(workers[0].cancel.remote("paced")) is True
    done = finished(sink, "paced")
    # it checkpointed within the grace: not killed, though its process was stopped part of the time
    assert done.exit_status == "cancelled" and done.exit_code == 143
    assert done.result["stopped"] is True
