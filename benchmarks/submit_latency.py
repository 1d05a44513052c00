"""Submit to the start decision on an idle local cluster: the daemon's own path, up to its worker.

::

    .venv/bin/python benchmarks/submit_latency.py [--repeats 10]

One local Ray (2 logical GPUs) and a daemon in this process (SQLite in a temporary data dir, fifo) with its
REST API: through the client, ``submit("diffusion-train", tiny spec)``, then polled with ``GET /v1/jobs/ID``
until its state is ``running`` (the tick decided to start it and committed that, before the controller is
asked), and separately until the job's child process is about to be spawned (its ``workdir/stderr.log`` exists:
the worker opens it as the child's stderr). The job is cancelled and waited for before the next repeat, so the
cluster is idle at each submit. Neither figure is the time until the job's own code runs, nor comparable with
Ray Jobs' ``RUNNING``: ``benchmarks/command_start.py`` times that, against Ray Jobs, for the same process.

Not a test: it prints figures (median, min, max over the repeats).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import POLL_S, summary, until  # noqa: E402  (beside this script)

SPEC = {"image_size": 8, "steps": 100000, "batch_size": 8, "channels": [8, 16], "checkpoint_every": 100000,
        "num_train_timesteps": 50}




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import ray

    from scheduler.client import Client
    from scheduler.config import Settings
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.daemon.daemon import Daemon

    ray.init(num_gpus=2, namespace="wattsched", log_to_driver=False)
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
            client.wait(job.id, timeout=120)
        running_s, spawned_s = running_s[1:], spawned_s[1:]

        print(f"machine: {os.cpu_count()} CPUs, no GPU (2 logical GPUs), Ray {ray.__version__}, "
              f"wattsched daemon on SQLite, policy fifo; polling every {POLL_S * 1000:g} ms")
        print(f"wattsched submit -> state running:        {summary(running_s)}")
        print(f"wattsched submit -> stderr.log opened:    {summary(spawned_s)}")
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
