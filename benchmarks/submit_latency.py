"""Submit-to-running latency on an idle local cluster: wattsched vs Ray Jobs, on the same Ray.

::

    .venv/bin/python benchmarks/submit_latency.py [--repeats 10]

One local Ray (2 logical GPUs, dashboard on, as Ray Jobs needs it) serves both:

- wattsched: a daemon in this process (SQLite in a temporary data dir, fifo) with its REST API; through the
  client, ``submit("diffusion-train", tiny spec)``, then polled with ``GET /v1/jobs/ID`` until its state is
  ``running`` (the scheduler placed it and the worker took it), and separately until the job's child process
  has been spawned (its ``workdir/stderr.log`` exists: the worker opens it as the child's stderr). The job is
  cancelled and waited for before the next repeat, so the cluster is idle at each submit.
- Ray Jobs: ``JobSubmissionClient.submit_job(entrypoint=...)``, polled with ``get_job_status`` until RUNNING
  (its supervisor started the entrypoint process); then stopped and waited for. The entrypoint runs the same
  tiny training through wattsched's own job process (``python -m workers.job_process --job FILE``).

Submit-to-running does not depend on the job's length: both are stopped once running. Not a test: it prints
figures (median, min, max over the repeats).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = {"image_size": 8, "steps": 100000, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 100000,
        "num_train_timesteps": 50}
POLL_S = 0.002


def until(predicate, timeout_s: float = 120.0):
    give_up_at = time.monotonic() + timeout_s
    while time.monotonic() < give_up_at:
        value = predicate()
        if value:
            return value
        time.sleep(POLL_S)
    raise TimeoutError("condition not met in time")


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"median {statistics.median(ms):.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import ray
    from ray.job_submission import JobStatus, JobSubmissionClient

    from scheduler.client import Client, WaitTimeout
    from scheduler.config import Settings
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.daemon.daemon import Daemon

    context = ray.init(num_gpus=2, include_dashboard=True, namespace="wattsched", log_to_driver=False)
    data_dir = Path(tempfile.mkdtemp(prefix="wattsched-latency-"))
    settings = replace(Settings.from_env(environ={}), data_dir=data_dir, port=0, logical_gpus=2)
    daemon = Daemon(settings).start()
    try:
        client = Client(daemon.url, daemon.token)
        running_s, spawned_s = [], []
        for _ in range(args.repeats + 1):  # the first is a warm-up (worker imports, connection pools)
            t0 = time.perf_counter()
            job = client.submit("diffusion-train", SPEC)
            until(lambda: client.get(job.id).state == "running")
            t_running = time.perf_counter() - t0
            until(lambda: (Path(job.raw["workdir"]) / "stderr.log").exists())
            t_spawned = time.perf_counter() - t0
            running_s.append(t_running)
            spawned_s.append(t_spawned)
            client.cancel(job.id)
            # A cancel that reaches the worker after it opened stderr.log but before its child process exists
            # is dropped (Worker.cancel answers False); send it again until the job ends.
            for _ in range(8):
                try:
                    client.wait(job.id, timeout=15)
                    break
                except WaitTimeout:
                    client.cancel(job.id)
            else:
                raise TimeoutError(f"job {job.id} did not stop after 8 cancels")
        running_s, spawned_s = running_s[1:], spawned_s[1:]

        jobs = JobSubmissionClient(f"http://{context.dashboard_url}")
        job_file = data_dir / "ray-job.json"
        job_file.write_text(json.dumps({"kind": "diffusion-train", "spec": SPEC, "workdir": str(data_dir / "rj")}))
        entrypoint = f"{sys.executable} -m workers.job_process --job {job_file}"
        ray_s = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            submission_id = jobs.submit_job(entrypoint=entrypoint, runtime_env={"working_dir": None,
                                                                                 "env_vars": {"PYTHONPATH": str(ROOT)}})
            until(lambda: jobs.get_job_status(submission_id) == JobStatus.RUNNING)
            ray_s.append(time.perf_counter() - t0)
            jobs.stop_job(submission_id)
            until(lambda: jobs.get_job_status(submission_id).is_terminal(), timeout_s=60)
        ray_s = ray_s[1:]

        print(f"machine: {os.cpu_count()} CPUs, no GPU (2 logical GPUs), Ray {ray.__version__}, "
              f"wattsched daemon on SQLite, policy fifo; polling every {POLL_S * 1000:g} ms")
        print(f"wattsched submit -> state running:        {summary(running_s)}")
        print(f"wattsched submit -> child process spawned: {summary(spawned_s)}")
        print(f"Ray Jobs submit_job -> RUNNING:           {summary(ray_s)}")
        print(f"ratio (Ray Jobs / wattsched running, medians): "
              f"{statistics.median(ray_s) / statistics.median(running_s):.1f}x; "
              f"(Ray Jobs / wattsched spawned): {statistics.median(ray_s) / statistics.median(spawned_s):.1f}x")
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
