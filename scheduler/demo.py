"""``wattsched demo``: the whole pipeline on the embedded default, in a couple of minutes on a laptop CPU.

It starts a local Ray with logical GPUs (metered by the simulated meter, and labelled so), the daemon
in-process with its REST API on a free loopback port, submits two small DDPM trainings on scikit-learn's
digits and two sampling jobs from the first one's checkpoint through the real client, shows progress while
they run, and prints each job's energy and emissions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from scheduler.client import WaitTimeout
from scheduler.config import Settings

TRAIN_DE = {"dataset": "digits", "image_size": 16, "steps": 120, "batch_size": 32, "channels": [16, 32],
            "num_train_timesteps": 100, "checkpoint_every": 40}
TRAIN_FR = {**TRAIN_DE, "steps": 80, "mixed_precision": "bf16", "gradient_checkpointing": True}
POLL_S = 0.5


def _progress_text(job) -> str:
    progress = job.raw.get("progress") or {}
    if job.state == "running" and "step" in progress and "total" in progress:
        return f"{progress['step']}/{progress['total']}"
    return job.state


class ProgressLine:
    """One status line, redrawn in place on a terminal and printed on change elsewhere (logs, CI)."""

    def __init__(self, stream=sys.stdout):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = ""

    def show(self, elapsed_s: float, text: str) -> None:
        """Show ``text``; on a terminal every call redraws the clock, elsewhere only changes are printed."""
        if text == self.last and not self.tty:
            return
        self.last = text
        line = f"[{elapsed_s:5.0f} s] {text}"
        self.stream.write("\r\033[K" + line if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


def _watch(client, names: dict[str, str], until_done: list[str], line: ProgressLine, started_s: float) -> None:
    """Show every job's progress until the jobs in ``until_done`` are finished."""
    while True:
        jobs = {job_id: client.get(job_id) for job_id in names}
        parts = [f"{names[j]} {_progress_text(job)}" for j, job in jobs.items()]
        line.show(time.monotonic() - started_s, " | ".join(parts))
        if all(jobs[j].state in ("succeeded", "failed", "cancelled") for j in until_done):
            return
        # a long poll: returns as soon as the first unfinished job ends, else after POLL_S
        pending = next(j for j in until_done if jobs[j].state not in ("succeeded", "failed", "cancelled"))
        try:
            client.wait(pending, timeout=POLL_S)
        except WaitTimeout:
            pass


def main(args=None) -> int:
    import ray

    from scheduler.client import Client
    from scheduler.controller import shutdown_controller
    from scheduler.daemon import Daemon
    from scheduler.tables import render_history

    settings = Settings.from_env()
    data_dir = Path(tempfile.mkdtemp(prefix="wattsched-demo-"))
    settings = replace(settings, data_dir=data_dir, database_url="", port=0, ray_address="")
    print("wattsched demo")
    print(f"  local Ray with {settings.logical_gpus} logical GPUs in zones {', '.join(settings.logical_zones)}: "
          f"no GPU hardware, so GPU energy comes from the simulated meter ({settings.logical_gpu_type} figures)")
    print("  carbon: the built-in synthetic signal (not a real grid)")
    print(f"  database and job outputs: {data_dir}")
    started_s = time.monotonic()
    daemon = Daemon(settings).start()
    line = ProgressLine()
    try:
        client = Client(url=daemon.url, token=daemon.token)
        print(f"  daemon on {daemon.url} (policy {settings.policy}); submitting jobs through the client")
        train_de = client.submit("diffusion-train", TRAIN_DE, zones=["DE"])
        train_fr = client.submit("diffusion-train", TRAIN_FR, zones=["FR"])
        names = {train_de.id: "train-DE", train_fr.id: "train-FR(bf16)"}
        _watch(client, names, [train_de.id], line, started_s)
        sample_ddim = client.submit("diffusion-sample", {"checkpoint": f"job:{train_de.id}", "sampler": "ddim",
                                                         "num_inference_steps": 25, "num_images": 16})
        sample_ddpm = client.submit("diffusion-sample", {"checkpoint": f"job:{train_de.id}", "sampler": "ddpm",
                                                         "num_images": 16})
        names.update({sample_ddim.id: "sample-ddim", sample_ddpm.id: "sample-ddpm"})
        _watch(client, names, list(names), line, started_s)
        line.done()
        history = client.history()
        print()
        print(render_history(history))
        failed = [names[r.job_id] for r in history.jobs if r.state != "succeeded"]
        grid = client.get(sample_ddim.id).result or {}
        if grid.get("grid_path"):
            print(f"\nimages from the DDIM sampler: {grid['grid_path']}")
        print("GPU figures are simulated (logical GPUs) and CPU figures estimated; emissions use the synthetic "
              f"signal. Demo wall time {time.monotonic() - started_s:.0f} s.")
        if failed:
            print(f"wattsched demo: error: {', '.join(failed)} did not succeed", file=sys.stderr)
            return 1
        return 0
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()
