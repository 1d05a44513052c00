"""Submit to first process running, for the user's own command: a wattsched ``command`` job vs Ray Jobs, on the
same idle local Ray.

::

    .venv/bin/python benchmarks/command_start.py [--repeats 10]

One local Ray (2 logical GPUs, dashboard on, as Ray Jobs needs it) serves both. The entrypoint is the same small
script for both: it writes ``time.time()`` to ``started`` in ``$WATTSCHED_JOB_DIR`` as its first statement and
exits. Each repeat submits one job to each, in turn (so both see the same load), and waits for both to end, so
the cluster is idle at every submit:

- wattsched: a daemon in this process (SQLite in a temporary data dir, fifo) with its REST API on loopback;
  ``Client.submit("command", {"argv": [python, script]})``; the job's own directory is its WATTSCHED_JOB_DIR.
- Ray Jobs: ``JobSubmissionClient.submit_job(entrypoint="python script")`` with WATTSCHED_JOB_DIR set to a
  fresh folder in its runtime environment.

What it times: from just before the submit call to the time the script recorded, both read from this machine's
clock: submission, scheduling, the launch, and the interpreter's start-up (the same for both). The first repeat
of each is a warm-up and not counted. Not a test: it prints figures (median, min, max).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from timing import POLL_S, load_average, summary, until  # noqa: E402  (beside this script)

SCRIPT = ("import os, time\n"
          "started_s = time.time()\n"
          "with open(os.path.join(os.environ['WATTSCHED_JOB_DIR'], 'started'), 'w') as f:\n"
          "    f.write(repr(started_s))\n")



def started_s(folder: Path) -> float:
    """The time the script recorded in ``folder``, once it is there (whole: written before it is closed)."""
    path = folder / "started"
    return float(until(lambda: path.exists() and path.read_text()))


def ray_jobs_ready(jobs, timeout_s: float = 120.0) -> None:
    """Wait until Ray Jobs accepts a job (its agent comes up some seconds after Ray) and has run it."""
    give_up_at = time.monotonic() + timeout_s
    while True:
        try:
            submission_id = jobs.submit_job(entrypoint="true")
            break
        except RuntimeError as exc:  # "No available agent to submit job, please try again later"
            if time.monotonic() > give_up_at:
                raise TimeoutError(f"Ray Jobs did not accept a job within {timeout_s:g} s: {exc}") from None
            time.sleep(0.5)
    until(lambda: jobs.get_job_status(submission_id).is_terminal(), timeout_s=timeout_s)




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import ray
    from ray.job_submission import JobSubmissionClient

    from scheduler.client import Client
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.config import Settings
    from scheduler.daemon.daemon import Daemon

    load_before = load_average()
    context = ray.init(num_gpus=2, include_dashboard=True, namespace="wattsched", log_to_driver=False)
    data_dir = Path(tempfile.mkdtemp(prefix="wattsched-command-start-"))
    script = data_dir / "started.py"
    script.write_text(SCRIPT)
    settings = replace(Settings.from_env(environ={}), data_dir=data_dir, port=0, logical_gpus=2)
    daemon = Daemon(settings).start()
    try:
        client = Client(daemon.url, daemon.token)
        jobs = JobSubmissionClient(f"http://{context.dashboard_url}")
        ray_jobs_ready(jobs)
        wattsched_s, ray_s = [], []
        for repeat in range(args.repeats + 1):  # the first is a warm-up (worker imports, connection pools)
            submitted_s = time.time()
            job = client.submit("command", {"argv": [sys.executable, str(script)]})
            wattsched_s.append(started_s(Path(job.raw["workdir"])) - submitted_s)
            done = client.wait(job.id, timeout=120)
            assert done.state == "succeeded", done.raw

            folder = data_dir / f"ray-job-{repeat}"
            folder.mkdir()
            submitted_s = time.time()
            submission_id = jobs.submit_job(entrypoint=f"{sys.executable} {script}",
                                            runtime_env={"env_vars": {"WATTSCHED_JOB_DIR": str(folder)}})
            ray_s.append(started_s(folder) - submitted_s)
            until(lambda: jobs.get_job_status(submission_id).is_terminal(), timeout_s=120)
        wattsched_s, ray_s = wattsched_s[1:], ray_s[1:]

        print(f"machine: {os.cpu_count()} CPUs, 2 logical GPUs, Ray {ray.__version__}, wattsched daemon on SQLite, "
              f"policy fifo; polling every {POLL_S * 1000:g} ms; load average {load_before} -> {load_average()}")
        print(f"wattsched command job, submit -> process running: {summary(wattsched_s)}")
        print(f"Ray Jobs submit_job, submit -> process running:   {summary(ray_s)}")
        ratio = statistics.median(ray_s) / statistics.median(wattsched_s)
        print(f"ratio (Ray Jobs / wattsched, medians): {ratio:.1f}x")
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
