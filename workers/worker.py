"""The GPU worker: one Ray actor per GPU that runs a job in a child process, meters it and reports to the controller.

``GpuWorker`` is a plain class; the controller applies ``ray.remote`` where it creates one (pinned to its node,
``num_gpus=1, num_cpus=0``). A job runs as ``python -m workers.job_process --job FILE`` in its own session
(``workers.job_run``), so it can be cancelled as a process group without touching the actor. While it runs, an
``EnergyRecorder`` meters the job's GPUs and CPU, and the worker reports the typed events of ``workers.events``
(``Started``, ``Progress`` about every ``report_interval_s``, ``Finished``) through an ``Outbox`` that keeps
their order. A job that could not be launched still gets a ``Finished``/``failed`` event: no job is lost
silently.

The worker never touches the database and never imports torch: the child does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from workers.errors import MeterError, WorkerBusy
from workers.events import CapMode, ExitStatus, Finished, Progress, Started
from workers.gpu_info import as_index, describe_worker
from workers.job_run import JobRun
from workers.outbox import ControllerReporter, Outbox, Reporter

log = logging.getLogger(__name__)

#: Seconds of one run-and-pause cycle when a logical GPU's job is paced to its power cap.
PACE_PERIOD_S = 1.0

#: How a stop the scheduler asked for may be reported in the ``Finished`` event.
STOP_OUTCOMES = (ExitStatus.CANCELLED, ExitStatus.SUSPENDED)

#: What a worker's ``options`` may hold, each with its default.
WORKER_DEFAULTS: dict[str, Any] = {
    # GPU model the simulated meter imitates when this GPU is logical (no NVML device).
    "gpu_type": "A100-SXM4-40GB",
    # Energy meter mode: auto (NVML where present, else simulated), nvml or simulated.
    "meter_mode": "auto",
    # Seconds between power samples taken while a job runs.
    "sample_interval_s": 0.5,
    # Seconds between progress events sent to the controller.
    "report_interval_s": 1.0,
    # torch threads of the job process (WATTSCHED_TORCH_THREADS); None leaves torch's own default.
    "torch_threads": 1,
    # Zone of this GPU when its node has no wattsched.io/zone label.
    "zone": None,
    # Zone of this GPU when it is logical and its node has no label (the embedded default spreads zones).
    "logical_zone": None,
    # Power caps on physical GPUs are only worked out and logged, never set, unless this is False (needs root).
    "power_cap_dry_run": True,
    # Seconds between SIGTERM and SIGKILL when a job is cancelled (training checkpoints in between).
    "cancel_grace_s": 10.0,
    # Seconds to wait for the controller to accept one event before retrying.
    "report_timeout_s": 30.0,
    # Attempts to deliver one event before it is logged and dropped (the controller is gone).
    "report_attempts": 5,
}


class GpuWorker:
    """Runs one job at a time on its GPU(s) in a child process, meters it, and reports events to the controller.

    ``reporter`` is a test seam: a function that takes one ``workers.events`` event; by default events go to the
    controller actor named ``controller_name`` in ``namespace``.
    """

    def __init__(
        self,
        worker_id: str,
        controller_name: str,
        namespace: str,
        options: dict | None = None,
        *,
        reporter: Reporter | None = None,
    ):
        unknown = sorted(set(options or {}) - set(WORKER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown worker options {unknown}; valid ones: {sorted(WORKER_DEFAULTS)}")
        self.worker_id = worker_id
        self.options = {**WORKER_DEFAULTS, **(options or {})}
        deliver = reporter or ControllerReporter(controller_name, namespace, self.options["report_timeout_s"])
        self._outbox = Outbox(deliver, self.options["report_attempts"])
        self._lock = threading.Lock()
        self._run: JobRun | None = None
        self._description: dict | None = None

    # --- queries -------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        """Who and where this worker is: ids, node, zone, GPUs, and the GPU's power range (W)."""
        if self._description is None:
            o = self.options
            self._description = describe_worker(self.worker_id, o["gpu_type"], o["zone"], o["logical_zone"])
        return dict(self._description)

    def busy(self) -> str | None:
        """The id of the job this worker runs, or None when idle."""
        with self._lock:
            return self._run.job_id if self._run else None

    # --- commands ------------------------------------------------------------------------------------------

    def start(self, job: dict) -> None:
        """Launch ``job`` in a child process and return at once; its outcome arrives as events.

        job: ``{job_id, run_id, kind, spec, workdir, gpu_ids, power_cap_w, speed}``; ``gpu_ids`` are all the GPUs
        of the job (this worker's and its co-workers' on the same node). Raises ``WorkerBusy`` when a job is
        running, ``ValueError`` when a key is missing. A launch that fails after that is reported as
        ``Finished``/``failed``.
        """
        missing = [k for k in ("job_id", "run_id", "kind", "spec", "workdir") if k not in job]
        if missing:
            raise ValueError(f"job is missing {missing}")
        run = JobRun(dict(job))
        with self._lock:
            if self._run is not None:
                raise WorkerBusy(
                    f"worker {self.worker_id} is running job {self._run.job_id}; cancel it or pick an idle worker"
                )
            self._run = run
        try:
            self._launch(run)
        except Exception as exc:  # noqa: BLE001 - every launch failure must become a finished event
            log.exception("could not launch job %s", run.job_id)
            self._abort_launch(run, f"could not launch job on worker {self.worker_id}: {exc}")

    def cancel(self, job_id: str, outcome: str = "cancelled") -> bool:
        """Ask the job to stop (SIGTERM to its process group, SIGKILL after ``cancel_grace_s``).

        Returns False when this worker does not run ``job_id``. The ``Finished`` event says ``outcome``:
        ``cancelled``, or ``suspended`` when the scheduler pauses an interruptible job at a checkpoint.
        """
        if outcome not in STOP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(STOP_OUTCOMES)}, got {outcome!r}")
        outcome = ExitStatus(outcome)
        with self._lock:
            run = self._run
        if run is None or run.job_id != job_id or run.proc is None:
            return False
        if run.cancel_requested:
            if outcome is ExitStatus.CANCELLED:  # a user's cancel overrides a pending suspension
                run.stop_outcome = outcome
            return True  # a second SIGTERM would kill the job in the middle of its checkpoint
        run.cancel_requested = True
        run.stop_outcome = outcome
        run.signal(signal.SIGTERM)
        timer = threading.Timer(self.options["cancel_grace_s"], self._kill_if_running, args=(run,))
        timer.daemon = True
        timer.start()
        return True

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop the running job, if any, before the actor is killed, so no child outlives its worker."""
        with self._lock:
            run = self._run
        if run is None or run.proc is None:
            return
        if not run.cancel_requested:
            run.cancel_requested = True
            run.signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            run.signal(signal.SIGKILL)
            run.proc.wait()

    # --- internals -----------------------------------------------------------------------------------------

    def _launch(self, run: JobRun) -> None:
        from workers.meters.factory import open_cpu_meter, open_gpu_meter
        from workers.meters.recorder import EnergyRecorder
        from workers.power_cap import cap_run

        job = run.job
        gpu_ids = job.get("gpu_ids")
        if gpu_ids is None:
            import ray

            gpu_ids = list(ray.get_gpu_ids())
        run.job["gpu_ids"] = gpu_ids = list(gpu_ids)
        workdir = Path(job["workdir"])
        workdir.mkdir(parents=True, exist_ok=True)
        job_file = workdir / "job.json"
        job_file.write_text(json.dumps({"kind": job["kind"], "spec": job["spec"], "workdir": str(workdir)}))

        # Physical GPUs are capped through NVML (a dry run by default); logical ones in their simulated meter.
        run.power_cap, run.capper = cap_run([as_index(g) for g in gpu_ids], job.get("power_cap_w"),
                                            logical=self.describe()["logical"],
                                            dry_run=self.options["power_cap_dry_run"])

        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
        # CUDA numbers GPUs fastest-first by default, NVML (and so the meters) by PCI bus: make them agree.
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["PYTHONUNBUFFERED"] = "1"
        if self.options["torch_threads"]:
            env["WATTSCHED_TORCH_THREADS"] = str(self.options["torch_threads"])
        run.stderr_path = workdir / "stderr.log"
        with open(run.stderr_path, "ab") as stderr:
            stderr.write(f"--- run {run.run_id} of job {run.job_id} on {self.worker_id} ---\n".encode())
            stderr.flush()
            run.stderr_offset = stderr.tell()
            run.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.job_process", "--job", str(job_file)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=str(workdir),
                env=env,
                start_new_session=True,
                text=True,
                bufsize=1,
            )
        pid = run.proc.pid
        try:
            gpu_meter = open_gpu_meter(
                [as_index(g) for g in gpu_ids],
                pid=pid,
                gpu_type=self.options["gpu_type"],
                mode=self.options["meter_mode"],
                # only a cap in force changes the draw: a dry run's GPU keeps its default limit
                power_cap_w=run.power_cap.limit_w if run.power_cap and run.power_cap.mode.in_force else None,
            )
            run.meters.append(gpu_meter)
            cpu_meter = open_cpu_meter(pid)
            run.meters.append(cpu_meter)
            run.recorder = EnergyRecorder(gpu_meter, cpu_meter, interval_s=self.options["sample_interval_s"])
            run.recorder.start()
        except Exception as exc:
            raise MeterError(f"could not open energy meters: {exc}") from exc

        self._outbox.put(Started(
            job_id=run.job_id, run_id=run.run_id, worker_id=self.worker_id, node_id=self.describe()["node_id"],
            gpu_ids=tuple(gpu_ids), pid=pid, at=time.time(), gpu_method=gpu_meter.method,
            cpu_method=cpu_meter.method, power_cap=run.power_cap))
        speed = float(job.get("speed") or 1.0)
        if run.power_cap and run.power_cap.mode is CapMode.SIMULATED and speed < 1.0:
            threading.Thread(target=self._pace, args=(run, speed), name=f"pace-{run.job_id}", daemon=True).start()
        reader = threading.Thread(target=run.read_stdout, args=(workdir / "events.jsonl",), daemon=True)
        reader.start()
        threading.Thread(target=self._monitor, args=(run, reader), name=f"monitor-{run.job_id}", daemon=True).start()

    def _pace(self, run: JobRun, speed: float) -> None:
        """Make a job on a logical GPU run at ``speed`` x its pace, as a capped GPU would (its power profile).

        The job process is stopped for ``1 - speed`` of every period (SIGSTOP/SIGCONT), so its real progress,
        and through its utilisation the simulated meter, follow the cap. It always ends continued, so that a
        cancel's SIGTERM is handled.
        """
        run_s, pause_s = speed * PACE_PERIOD_S, (1.0 - speed) * PACE_PERIOD_S
        stop = threading.Event()
        try:
            while run.proc.poll() is None and not run.cancel_requested:
                stop.wait(run_s)
                run.signal(signal.SIGSTOP)
                stop.wait(pause_s)
                run.signal(signal.SIGCONT)
        finally:
            if run.proc.poll() is None:
                run.signal(signal.SIGCONT)

    def _abort_launch(self, run: JobRun, reason: str) -> None:
        """Clean up a launch that failed part-way and report the job as failed."""
        if run.proc is not None and run.proc.poll() is None:
            run.signal(signal.SIGKILL)
            run.proc.wait()
        energy = None
        if run.recorder is not None:
            try:
                energy = run.recorder.stop()
            except Exception:  # noqa: BLE001 - the failure being reported matters more
                log.exception("could not stop the recorder of job %s", run.job_id)
        self._release(run)
        self._finish(run, ExitStatus.FAILED, run.proc.returncode if run.proc else None, reason, energy, ())

    def _monitor(self, run: JobRun, reader: threading.Thread) -> None:
        """Report progress until the child exits, then stop metering and report how it ended."""
        interval = self.options["report_interval_s"]
        while True:
            try:
                run.proc.wait(timeout=interval)
                break
            except subprocess.TimeoutExpired:
                self._report_progress(run)
        # The child may have left helpers (data loaders) in its session; none may outlive the job, and killing
        # them first closes their copies of the stdout pipe, so the reader sees its end.
        run.signal(signal.SIGKILL)
        reader.join(timeout=10)
        energy, samples = None, ()
        try:
            energy = run.recorder.stop()
            samples = tuple(run.recorder.drain_samples())
        except Exception:  # noqa: BLE001 - the job's outcome is still reported
            log.exception("could not stop the recorder of job %s", run.job_id)
        self._release(run)
        status, error = run.outcome()
        with run.lock:
            result = run.result
        self._finish(run, status, run.proc.returncode, error, energy, samples, result=result)

    @staticmethod
    def _release(run: JobRun) -> None:
        """Close the run's meters and give its GPUs their default power limit back."""
        for meter in run.meters:
            meter.close()
        if run.capper is not None:
            run.capper.restore()

    def _report_progress(self, run: JobRun) -> None:
        samples = tuple(run.recorder.drain_samples())
        with run.lock:
            progress = run.progress
        if not samples and progress is run.progress_reported:
            return
        run.progress_reported = progress
        self._outbox.put(Progress(job_id=run.job_id, run_id=run.run_id, at=time.time(),
                                  progress=dict(progress or {}), samples=samples))

    def _finish(self, run: JobRun, status: ExitStatus, exit_code: int | None, error: str | None, energy,
                samples: tuple, result: dict | None = None) -> None:
        with self._lock:
            if self._run is run:
                self._run = None
        self._outbox.put(Finished(
            job_id=run.job_id, run_id=run.run_id, worker_id=self.worker_id, at=time.time(), exit_status=status,
            exit_code=exit_code, result=result, error=error, energy=energy, samples=samples,
            power_cap=run.power_cap))

    def _kill_if_running(self, run: JobRun) -> None:
        if run.proc.poll() is None:
            log.warning("job %s ignored SIGTERM for %ss; killing it", run.job_id, self.options["cancel_grace_s"])
            run.signal(signal.SIGKILL)
