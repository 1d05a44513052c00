"""``wattsched demo``: the whole pipeline on the embedded default, in a couple of minutes on a laptop CPU.

It starts a local Ray with logical GPUs (metered by the simulated meter, and labelled so), the daemon
in-process with its REST API on a free loopback port and the ``carbon-aware`` policy, submits small DDPM
trainings on scikit-learn's digits and sampling jobs through the real client, shows progress while they run,
and prints each job's energy, emissions and saving against fifo.

The demo clock: the built-in synthetic carbon signal runs a whole day in ``DEMO_SECONDS_PER_HOUR`` x 24 real
seconds and starts in the evening peak, so that deferring a job "to the night" or suspending it until the
grid is cleaner plays out in seconds. Job times, energy and deadlines are real; only the grid's day is
compressed. The signal is synthetic (not a real grid) and labelled so.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from scheduler.client import WaitTimeout
from scheduler.config import Settings

TRAIN_DE = {"dataset": "digits", "image_size": 16, "steps": 120, "batch_size": 32, "channels": [16, 32],
            "num_train_timesteps": 100, "checkpoint_every": 20}
TRAIN_FR = {**TRAIN_DE, "steps": 60, "mixed_precision": "bf16", "gradient_checkpointing": True}
POLL_S = 0.5
#: Real seconds per hour of the synthetic grid's day (the demo clock): a day passes in a minute.
DEMO_SECONDS_PER_HOUR = 2.5
#: The zones the demo's logical GPUs stand in, unless WATTSCHED_LOGICAL_ZONES says otherwise.
DEMO_ZONES = ("DE", "FR")
#: The grid's hour of day when the demo starts: just before the evening peak, when waiting pays.
DEMO_START_HOUR = 16.0
#: The shortest stretch an interruptible job runs before it may be suspended again (each resume restarts a
#: process and loads a checkpoint: several seconds here).
DEMO_MIN_STRETCH_S = 15.0
#: How long the flexible jobs may take (real seconds): about one compressed day.
DEMO_SLACK_S = 90.0


def _progress_text(job) -> str:
    progress = job.raw.get("progress") or {}
    if job.state == "running" and "step" in progress and "total" in progress:
        return f"{progress['step']}/{progress['total']}"
    if job.state in ("deferred", "suspended") and job.reason.startswith("carbon"):
        return f"{job.state} (carbon)"
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

    from scheduler.carbon.signal import SyntheticSignal
    from scheduler.client import Client
    from scheduler.cluster.controller import shutdown_controller
    from scheduler.daemon.daemon import Daemon

    settings = Settings.from_env()
    if not settings.logical_zones:  # the demo shows space shifting: its logical GPUs stand in two zones
        settings = replace(settings, logical_zones=DEMO_ZONES)
    data_dir = Path(tempfile.mkdtemp(prefix="wattsched-demo-"))
    settings = replace(settings, data_dir=data_dir, database_url="", port=0, ray_address="", policy="carbon-aware",
                       policy_options={"min_stretch_s": DEMO_MIN_STRETCH_S}, carbon_config="")
    print("wattsched demo")
    print(f"  local Ray with {settings.logical_gpus} logical GPUs in zones {', '.join(settings.logical_zones)}: "
          f"no GPU hardware, so GPU energy comes from the simulated meter ({settings.logical_gpu_type} figures)")
    print(f"  carbon: the built-in synthetic signal (not a real grid) on the demo clock, one grid day per "
          f"{24 * DEMO_SECONDS_PER_HOUR:.0f} s")
    print(f"  policy: {settings.policy}; database and job outputs: {data_dir}")
    started_s = time.monotonic()
    signal = SyntheticSignal(seconds_per_hour=DEMO_SECONDS_PER_HOUR, origin_s=time.time(),
                             origin_hour=DEMO_START_HOUR)
    daemon = Daemon(settings, signal=signal).start()
    line = ProgressLine()
    try:
        client = Client(url=daemon.url, token=daemon.token)
        print(f"  daemon on {daemon.url}; submitting jobs through the client")
        deadline = lambda: datetime.now(timezone.utc) + timedelta(seconds=DEMO_SLACK_S)  # noqa: E731
        train_fr = client.submit("diffusion-train", TRAIN_FR, zones=["FR"])
        train_de = client.submit("diffusion-train", TRAIN_DE, zones=["DE"], deadline=deadline(), interruptible=True)
        names = {train_fr.id: "train-FR(bf16)", train_de.id: "train-DE(flexible)"}
        _watch(client, names, [train_fr.id], line, started_s)
        checkpoint = {"checkpoint": f"job:{train_fr.id}"}
        sample_any = client.submit("diffusion-sample", {**checkpoint, "sampler": "ddim", "num_inference_steps": 25,
                                                        "num_images": 16}, zones=["DE", "FR"], deadline=deadline())
        sample_de = client.submit("diffusion-sample", {**checkpoint, "sampler": "ddpm", "num_images": 16},
                                  zones=["DE"], deadline=deadline())
        names.update({sample_any.id: "sample-ddim(DE|FR)", sample_de.id: "sample-ddpm(DE)"})
        _watch(client, names, list(names), line, started_s)
        line.done()
        print()
        _print_results(client, names)
        grid = client.get(sample_any.id).result or {}
        if grid.get("grid_path"):
            print(f"\nimages from the DDIM sampler: {grid['grid_path']} (after so few training steps they are "
                  "still mostly noise; train with more steps for digits)")
        print("GPU figures are simulated (logical GPUs), CPU figures estimated; emissions use the synthetic signal. "
              f"Demo wall time {time.monotonic() - started_s:.0f} s.")
        failed = [name for job_id, name in names.items() if client.get(job_id).state != "succeeded"]
        if failed:
            print(f"wattsched demo: error: {', '.join(failed)} did not succeed", file=sys.stderr)
            return 1
        return 0
    finally:
        daemon.stop()
        shutdown_controller()
        ray.shutdown()


def _print_results(client, names: dict[str, str]) -> None:
    """The history table, then each job's emissions against its fifo counterfactual (a model, labelled so).

    Unknown figures stay unknown (n/a) and are counted apart, never added as zeros; the total is given per way
    the energy was obtained, never summed across methods.
    """
    from scheduler.cli.tables import NOT_AVAILABLE, render_history, render_table
    from scheduler.store.exports import totals

    history = client.history()
    print(render_history(history))
    rows = {row.job_id: row.raw for row in history.jobs}
    mine = [rows[job_id] for job_id in names if job_id in rows]
    table = []
    for job_id, name in names.items():
        row, runs = rows.get(job_id, {}), client.get(job_id).runs
        table.append([name, "+".join(dict.fromkeys(r.zone for r in runs if r.zone)) or NOT_AVAILABLE,
                      str(len(runs)), _grams(row.get("emissions_g")),
                      _grams(row.get("counterfactual_emissions_g")),
                      _share(row.get("saving_g"), row.get("counterfactual_emissions_g"))])
    by_method = totals(mine)["by_method"]
    for total in by_method:
        label = "total" if len(by_method) == 1 else f"total ({'+'.join(total['methods']) or 'no energy'})"
        unknown = total["emissions_unknown_jobs"]
        table.append([label, f"{unknown} unknown" if unknown else "", "", _grams(total["emissions_g"]),
                      _grams(total["counterfactual_emissions_g"]),
                      _share(total["saving_g"], total["counterfactual_emissions_g"])
                      + (f" ({total['saving_jobs']} of {total['jobs']} jobs)" if total["saving_g"] is not None
                         else "")])
    print("\nagainst fifo (modelled: each job's own energy profile moved to its submission time in its home zone, "
          "at the intensities that occurred there; a power cap is undone only where it was in force):")
    print(render_table(("job", "zones", "runs", "emissions g", "fifo g (modelled)", "saving (modelled)"), table,
                       numeric=(2, 3, 4, 5)))


def _grams(value: float | None) -> str:
    from scheduler.cli.tables import NOT_AVAILABLE, format_number

    return NOT_AVAILABLE if value is None else format_number(value)


def _share(saving_g: float | None, fifo_g: float | None) -> str:
    """The saving as a share of the fifo figure; n/a when either is unknown (never a zero)."""
    from scheduler.cli.tables import NOT_AVAILABLE

    return f"{saving_g / fifo_g:.0%}" if saving_g is not None and fifo_g else NOT_AVAILABLE
