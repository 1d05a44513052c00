"""The GPU worker: one Ray actor per GPU that runs a job in a child process, meters it and reports to the controller.

``GpuWorker`` is a plain class; the controller applies ``ray.remote`` where it creates one (pinned to its node,
``num_gpus=1, num_cpus=0``). A job's processes are started by a ``workers.launcher.Launcher``, each in its own
session, so they can be stopped as process groups without touching the actor: ``python -m workers.job_process
--job FILE`` for the built-in kinds, the user's command line for a ``command`` job; one per GPU, with torchrun's
environment, when the job is launched ``per-gpu`` and its kind runs a process per GPU. Every process gets the
job's ``WATTSCHED_*`` variables (see ``job_environment``).

Stopping (cancel, suspension, time limit, shutdown) follows the job's protocol: its stop signal to every process
group, its grace, then SIGKILL. A stop that arrives while the job is being launched is remembered and applied as
soon as the processes exist (or, before they do, nothing is started).

While a job runs, an ``EnergyRecorder`` meters its GPUs and its processes' CPU, and the worker reports the typed
events of ``workers.events`` (``Started``, ``Progress`` about every ``report_interval_s``, ``Finished``) through
an ``Outbox`` that keeps their order. A job that could not be launched still gets a ``Finished``/``failed``
event: no job is lost silently.

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
from typing import IO, Any

from workers.errors import MeterError, WorkerBusy
from workers.file_modes import make_private_dir
from workers.events import CapMode, ExitStatus, Finished, Progress, Started
from workers.gpu_info import as_index, describe_worker
from workers.job_run import JobRun
from workers.kinds import KindRegistry, builtin_kinds
from workers.launcher import LOOPBACK, Launcher, NodeLayout, ProcessSpec, free_port
from workers.memory_limit import GIB, limited_argv
from workers.outbox import ControllerReporter, Outbox, Reporter
from workers.progress_file import ProgressFile

log = logging.getLogger(__name__)

#: Seconds of one run-and-pause cycle when a logical GPU's job is paced to its power cap.
PACE_PERIOD_S = 1.0

#: How a stop the scheduler asked for may be reported in the ``Finished`` event.
STOP_OUTCOMES = (ExitStatus.CANCELLED, ExitStatus.SUSPENDED)
#: The file in a command job's workdir that its processes append progress lines to (WATTSCHED_PROGRESS).
PROGRESS_FILE = "progress.jsonl"

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
    # Seconds from the stop signal to SIGKILL for a job whose start gives no grace of its own (the daemon always
    # gives the job's; this is for jobs started by hand).
    "cancel_grace_s": 120.0,
    # Seconds to wait for the controller to accept one event before retrying.
    "report_timeout_s": 30.0,
    # Attempts to deliver one event before it is logged and dropped (the controller is gone).
    "report_attempts": 5,
}


class GpuWorker:
    """Runs one job at a time on its GPU(s) in child processes, meters it, and reports events to the controller.

    ``reporter`` is a test seam: a function that takes one ``workers.events`` event; by default events go to the
    controller actor named ``controller_name`` in ``namespace``. ``kinds``: the job kinds it can run (the
    built-in kinds when None).
    """

    def __init__(
        self,
        worker_id: str,
        controller_name: str,
        namespace: str,
        options: dict | None = None,
        *,
        reporter: Reporter | None = None,
        kinds: KindRegistry | None = None,
    ):
        unknown = sorted(set(options or {}) - set(WORKER_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown worker options {unknown}; valid ones: {sorted(WORKER_DEFAULTS)}")
        self.worker_id = worker_id
        self.options = {**WORKER_DEFAULTS, **(options or {})}
        deliver = reporter or ControllerReporter(controller_name, namespace, self.options["report_timeout_s"])
        self._outbox = Outbox(deliver, self.options["report_attempts"])
        self._kinds = kinds if kinds is not None else builtin_kinds()
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

    def free_port(self) -> int:
        """A TCP port free now on this worker's node, on every interface: the rendezvous (MASTER_PORT) of a gang
        whose rank 0 runs here."""
        return free_port("0.0.0.0")

    def busy(self) -> str | None:
        """The id of the job this worker runs, or None when idle."""
        with self._lock:
            return self._run.job_id if self._run else None

    # --- commands ------------------------------------------------------------------------------------------

    def start(self, job: dict) -> None:
        """Launch ``job`` and return at once; its outcome arrives as events.

        job: ``{job_id, run_id, kind, spec, workdir}`` and optionally ``gpu_ids`` (all the GPUs of the job on
        this node: this worker's and its co-workers'), ``power_cap_w``, ``speed``, ``attempt`` (the run's number,
        from 1), ``resuming`` (an earlier run was suspended, preempted or lost), ``launch`` (``{"mode": "per-gpu"
        or "per-node", "stop_signal": "SIGTERM", "grace_s": 120}``) and ``stop`` (``cancelled`` or ``suspended``:
        a stop that came before the job, so nothing is started). Raises ``WorkerBusy`` when a job is running,
        ``ValueError`` when a key is missing. ``gang`` (``{"node_rank", "nnodes", "master_addr", "master_port"}``):
        this node's place in a multi-node gang; the worker then runs this node's processes only. A launch that
        fails after that is reported as ``Finished``/``failed``.
        """
        missing = [k for k in ("job_id", "run_id", "kind", "spec", "workdir") if k not in job]
        if missing:
            raise ValueError(f"job is missing {missing}")
        run = JobRun(dict(job))
        if job.get("stop"):
            run.stop_requested, run.stop_outcome = True, ExitStatus(job["stop"])
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
        """Ask the job to stop: its stop signal to every process group, SIGKILL after its grace.

        Returns False when this worker does not run ``job_id``. A job still being launched is stopped as soon as
        its processes exist (or not started at all). The ``Finished`` event says ``outcome``: ``cancelled``, or
        ``suspended`` when the scheduler pauses an interruptible job at a checkpoint.
        """
        if outcome not in STOP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(STOP_OUTCOMES)}, got {outcome!r}")
        outcome = ExitStatus(outcome)
        with self._lock:
            run = self._run
        if run is None or run.job_id != job_id:
            return False
        with run.lock:
            if run.stop_requested:
                if outcome is ExitStatus.CANCELLED:  # a user's cancel overrides a pending suspension
                    run.stop_outcome = outcome
                return True  # a second signal would interrupt the job in the middle of its checkpoint
            run.stop_requested, run.stop_outcome = True, outcome
            launcher = run.launcher
        if launcher is not None:  # else the launch, under way, sees the request before it starts anything
            self._stop(launcher)
        return True

    def shutdown(self, grace_s: float | None = None) -> None:
        """Stop the running job, if any, before the actor is killed, so no child outlives its worker.

        grace_s: the longest wait before SIGKILL (None: the job's own grace).
        """
        with self._lock:
            run = self._run
        if run is None:
            return
        with run.lock:
            run.stop_requested = True
            launcher = run.launcher
        if launcher is None:
            return
        self._stop(launcher)
        if not launcher.wait(run.grace_s if grace_s is None else grace_s):
            launcher.kill()
            launcher.wait()

    # --- internals -----------------------------------------------------------------------------------------

    @staticmethod
    def _stop(launcher: Launcher) -> None:
        launcher.stop("asked")
        # A process paused by the pacer (SIGSTOP) handles its stop signal only once continued.
        launcher.signal_all(signal.SIGCONT)

    def _launch(self, run: JobRun) -> None:
        from workers.power_cap import cap_run

        job = run.job
        gpu_ids = job.get("gpu_ids")
        if gpu_ids is None:
            import ray

            gpu_ids = list(ray.get_gpu_ids())
        run.job["gpu_ids"] = gpu_ids = list(gpu_ids)
        workdir = make_private_dir(job["workdir"])
        processes = self._lay_out(run, workdir)

        # Physical GPUs are capped through NVML (a dry run by default); logical ones in their simulated meter.
        run.power_cap, run.capper = cap_run([as_index(g) for g in gpu_ids], job.get("power_cap_w"),
                                            logical=self.describe()["logical"],
                                            dry_run=self.options["power_cap_dry_run"])

        run.stderr_path = workdir / "stderr.log"
        with open(run.stderr_path, "ab") as stderr:
            ranks = f"ranks {processes[0].rank}-{processes[-1].rank}" if len(processes) > 1 else "one process"
            stderr.write(f"--- run {run.run_id} of job {run.job_id} on {self.worker_id} ({ranks}) ---\n".encode())
            stderr.flush()
            run.stderr_offset = stderr.tell()
            launcher = Launcher(processes, run.stop_signal, run.grace_s,
                                stdout=subprocess.PIPE if run.protocol else stderr, stderr=stderr)
            with run.lock:
                if not run.stop_requested:
                    try:
                        launcher.start(supervise=False)  # supervised once metered: see below
                    except OSError as exc:
                        first = processes[0]
                        raise OSError(f"cannot start {first.argv[0]!r} in {first.cwd!r}: {exc.strerror or exc}") \
                            from None
                    run.launcher = launcher
        if run.launcher is None:  # stopped before it began: nothing was started
            self._release(run)
            self._finish(run, run.stop_outcome, None, None, None, ())
            return
        pids = launcher.pids
        gpu_meter, cpu_meter = self._meter(run, pids)
        # Only now: a process that ended at once was not reaped before the meters could look at it.
        launcher.supervise()

        self._outbox.put(Started(
            job_id=run.job_id, run_id=run.run_id, worker_id=self.worker_id, node_id=self.describe()["node_id"],
            gpu_ids=tuple(gpu_ids), pid=pids[0], at=time.time(), gpu_method=gpu_meter.method,
            cpu_method=cpu_meter.method, power_cap=run.power_cap, pids=tuple(pids)))
        speed = float(job.get("speed") or 1.0)
        if run.power_cap and run.power_cap.mode is CapMode.SIMULATED and speed < 1.0:
            threading.Thread(target=self._pace, args=(run, speed), name=f"pace-{run.job_id}", daemon=True).start()
        readers, sink = [], None
        if run.protocol:
            sink = open(workdir / "events.jsonl", "a")
            for spec, popen in zip(processes, launcher.popens):
                reader = threading.Thread(target=run.read_stdout, args=(spec.rank, popen.stdout, sink), daemon=True)
                reader.start()
                readers.append(reader)
        threading.Thread(target=self._monitor, args=(run, readers, sink), name=f"monitor-{run.job_id}",
                         daemon=True).start()

    def _lay_out(self, run: JobRun, workdir: Path) -> list[ProcessSpec]:
        """The job's processes on this node: its kind's command line (or the job process), with the job's
        environment and each rank's; sets how the run stops and reports."""
        job = run.job
        kind = self._kinds.get(job["kind"])
        launch = job.get("launch") or {}
        stop_signal = launch.get("stop_signal") or "SIGTERM"
        run.stop_signal = int(getattr(signal, stop_signal))
        run.grace_s = float(launch["grace_s"] if launch.get("grace_s") is not None else self.options["cancel_grace_s"])
        per_gpu = launch.get("mode", "per-gpu") == "per-gpu" and kind.process_per_gpu
        gang = job.get("gang") or {}  # this node's place in a multi-node gang, from the controller
        layout = NodeLayout(tuple(job["gpu_ids"]), "per-gpu" if per_gpu else "per-node",
                            node_rank=int(gang.get("node_rank", 0)), nnodes=int(gang.get("nnodes", 1)),
                            master_addr=gang.get("master_addr") or LOOPBACK,
                            master_port=int(gang.get("master_port") or free_port()))

        argv = kind.argv(job["spec"])
        # A command's own variables go under wattsched's and the launcher's, which it may not change.
        env = job_environment(job, workdir, self.options["torch_threads"],
                              job["spec"].get("env") or {} if argv is not None else {})
        if argv is None:  # a built-in kind: its job process speaks the stdout protocol
            job_file = workdir / "job.json"
            job_file.write_text(json.dumps({"kind": job["kind"], "spec": job["spec"], "workdir": str(workdir),
                                            "stop_signal": stop_signal}))
            argv = [sys.executable, "-m", "workers.job_process", "--job", str(job_file)]
            cwd = workdir
        else:  # the user's command: it reports in its progress file
            run.protocol = False
            env["WATTSCHED_PROGRESS"] = str(workdir / PROGRESS_FILE)
            run.progress_file = ProgressFile(workdir / PROGRESS_FILE)
            cwd = kind.working_directory(job["spec"], workdir)  # its cwd, checked again where it runs
        if launch.get("memory_limit_gib"):  # each process sets it on itself before it becomes the job's
            argv = limited_argv(argv, int(launch["memory_limit_gib"] * GIB))
        processes = [ProcessSpec(rank, tuple(argv), {**env, **rank_env}, str(cwd))
                     for rank, rank_env in layout.rank_envs()]
        run.main_rank = processes[0].rank
        return processes

    def _meter(self, run: JobRun, pids: list[int]) -> tuple:
        """Open the meters of the run's GPUs and processes and start recording; (GPU meter, CPU meter)."""
        from workers.meters.factory import open_cpu_meter, open_gpu_meter
        from workers.meters.recorder import EnergyRecorder

        try:
            metered = pids[0] if len(pids) == 1 else tuple(pids)
            gpu_meter = open_gpu_meter(
                [as_index(g) for g in run.job["gpu_ids"]],
                pid=metered,
                gpu_type=self.options["gpu_type"],
                mode=self.options["meter_mode"],
                # only a cap in force changes the draw: a dry run's GPU keeps its default limit
                power_cap_w=run.power_cap.limit_w if run.power_cap and run.power_cap.mode.in_force else None,
            )
            run.meters.append(gpu_meter)
            cpu_meter = open_cpu_meter(metered)
            run.meters.append(cpu_meter)
            run.recorder = EnergyRecorder(gpu_meter, cpu_meter, interval_s=self.options["sample_interval_s"])
            run.recorder.start()
        except Exception as exc:
            raise MeterError(f"could not open energy meters: {exc}") from exc
        return gpu_meter, cpu_meter

    def _pace(self, run: JobRun, speed: float) -> None:
        """Make a job on a logical GPU run at ``speed`` x its pace, as a capped GPU would (its power profile).

        The job's processes are stopped for ``1 - speed`` of every period (SIGSTOP/SIGCONT), so their real
        progress, and through their utilisation the simulated meter, follow the cap. They always end continued,
        so that a stop signal is handled.
        """
        run_s, pause_s = speed * PACE_PERIOD_S, (1.0 - speed) * PACE_PERIOD_S
        launcher = run.launcher
        stop = threading.Event()
        try:
            while not launcher.exited and not run.stop_requested:
                stop.wait(run_s)
                launcher.signal_all(signal.SIGSTOP)
                stop.wait(pause_s)
                launcher.signal_all(signal.SIGCONT)
        finally:
            launcher.signal_all(signal.SIGCONT)

    def _abort_launch(self, run: JobRun, reason: str) -> None:
        """Clean up a launch that failed part-way and report the job as failed."""
        if run.launcher is not None and not run.launcher.exited:
            run.launcher.kill()
            run.launcher.supervise()
            run.launcher.wait()
        energy = None
        if run.recorder is not None:
            try:
                energy = run.recorder.stop()
            except Exception:  # noqa: BLE001 - the failure being reported matters more
                log.exception("could not stop the recorder of job %s", run.job_id)
        self._release(run)
        self._finish(run, ExitStatus.FAILED, run.exit_code(), reason, energy, ())

    def _monitor(self, run: JobRun, readers: list[threading.Thread], sink: IO[str] | None) -> None:
        """Report progress until every process has exited, then stop metering and report how the run ended."""
        interval = self.options["report_interval_s"]
        while not run.launcher.wait(interval):
            self._report_progress(run)
        # A process may have left helpers (data loaders) in its session; none may outlive the job, and killing
        # them first closes their copies of the stdout pipe, so the readers see its end.
        run.launcher.kill()
        for reader in readers:
            reader.join(timeout=10)
        if sink is not None:
            sink.close()
        self._report_progress(run)  # the last progress lines, before the end
        energy, samples = None, ()
        try:
            energy = run.recorder.stop()
            samples = tuple(run.recorder.drain_samples())
        except Exception:  # noqa: BLE001 - the job's outcome is still reported
            log.exception("could not stop the recorder of job %s", run.job_id)
        self._release(run)
        status, error = run.outcome()
        with run.lock:
            result = run.result if run.protocol else run.command_result()
        self._finish(run, status, run.exit_code(), error, energy, samples, result=result)

    @staticmethod
    def _release(run: JobRun) -> None:
        """Close the run's meters and give its GPUs their default power limit back."""
        for meter in run.meters:
            meter.close()
        if run.capper is not None:
            run.capper.restore()

    def _report_progress(self, run: JobRun) -> None:
        run.read_progress_file()
        samples = tuple(run.recorder.drain_samples())
        with run.lock:
            progress = run.progress
        if not samples and progress is run.progress_reported:
            return
        run.progress_reported = progress
        self._outbox.put(Progress(job_id=run.job_id, run_id=run.run_id, at=time.time(),
                                  progress=dict(progress or {}), samples=samples, worker_id=self.worker_id))

    def _finish(self, run: JobRun, status: ExitStatus, exit_code: int | None, error: str | None, energy,
                samples: tuple, result: dict | None = None) -> None:
        with self._lock:
            if self._run is run:
                self._run = None
        self._outbox.put(Finished(
            job_id=run.job_id, run_id=run.run_id, worker_id=self.worker_id, at=time.time(), exit_status=status,
            exit_code=exit_code, result=result, error=error, energy=energy, samples=samples,
            power_cap=run.power_cap))


def job_environment(job: dict[str, Any], workdir: Path, torch_threads: int | None,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of a job (before its rank's variables): the worker's own, then ``extra``
    (a command's ``env``), then the job's ``WATTSCHED_*`` variables.

    WATTSCHED_JOB_ID: the job's id; WATTSCHED_RUN: the run's number (1, 2, ... as the job is resumed or
    requeued); WATTSCHED_JOB_DIR: the job's working directory, the same for every run (checkpoints go there);
    WATTSCHED_RESUMING: ``1`` when an earlier run of the job was suspended, preempted or lost, else ``0``.
    """
    env = {**os.environ, **(extra or {})}
    # CUDA numbers GPUs fastest-first by default, NVML (and so the meters) by PCI bus: make them agree.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["PYTHONUNBUFFERED"] = "1"
    if torch_threads:
        env["WATTSCHED_TORCH_THREADS"] = str(torch_threads)
    env["WATTSCHED_JOB_ID"] = str(job["job_id"])
    env["WATTSCHED_RUN"] = str(int(job.get("attempt") or 1))
    env["WATTSCHED_JOB_DIR"] = str(workdir)
    env["WATTSCHED_RESUMING"] = "1" if job.get("resuming") else "0"
    return env
