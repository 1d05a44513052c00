"""The GPU worker: one Ray actor per GPU that runs a job in a child process, meters it and reports to the controller.

``GpuWorker`` is a plain class; the controller applies ``ray.remote`` where it creates one (pinned to its node,
``num_gpus=1, num_cpus=0``). A job runs as ``python -m workers.job_process --job FILE`` in its own session, so it
can be cancelled as a process group without touching the actor. While it runs, an ``EnergyRecorder`` meters the
job's GPUs and CPU, and the worker pushes events to the controller:

- ``started``: the child is running and metered.
  ``{type, job_id, run_id, worker_id, node_id, gpu_ids, pid, at, gpu_method, cpu_method}``
- ``progress``: about every ``report_interval_s``, the child's latest progress line and the new power samples.
  ``{type, job_id, run_id, at, progress: {step, total, ...} or {}, samples}``
- ``finished``: the child has exited. ``{type, job_id, run_id, worker_id, at, exit_status, exit_code, result,
  error, energy, samples}``; exit_status is ``succeeded``, ``failed``, ``cancelled`` or ``suspended`` (the controller adds
  ``lost``); error is the child's error message, else the tail of its stderr; energy is
  ``EnergyTotals.to_dict()``. A job that could not be launched still gets a ``finished``/``failed`` event (no
  ``started``, energy None when the meters never opened): no job is lost silently.

``at`` is Unix seconds; a sample is ``[timestamp_s, gpu_power_w, cpu_power_w, gpu_energy_j, cpu_energy_j]``,
energies cumulative since the job started. The child's stdout lines are kept in ``workdir/events.jsonl`` and its
stderr in ``workdir/stderr.log`` (appended, one header line per run).

Events are delivered in order by one outbox thread (the controller is a threaded actor, which does not keep the
order of calls, so the worker waits for each event to be accepted before sending the next). The worker never
touches the database and never imports torch: the child does.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.errors import MeterError, WorkerBusy

log = logging.getLogger(__name__)

#: The Ray node label that names a node's electricity-grid zone (set with ``ray start --labels``).
ZONE_LABEL = "wattsched.io/zone"

#: What a worker's ``options`` may hold, each with its default.
#: Seconds of one run-and-pause cycle when a logical GPU's job is paced to its power cap.
PACE_PERIOD_S = 1.0

#: How a stop the scheduler asked for is reported in the ``finished`` event.
STOP_OUTCOMES = ("cancelled", "suspended")

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

#: How many trailing lines of the child's stderr a failed job reports.
STDERR_TAIL_LINES = 20

Reporter = Callable[[dict], None]


class _Outbox:
    """Delivers events one at a time, in order, retrying while the controller is briefly unreachable."""

    def __init__(self, deliver: Reporter, attempts: int):
        self._deliver = deliver
        self._attempts = max(1, attempts)
        self._queue: queue.Queue[dict] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="wattsched-outbox", daemon=True)
        self._thread.start()

    def put(self, event: dict) -> None:
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            for attempt in range(self._attempts):
                try:
                    self._deliver(event)
                    break
                except Exception as exc:  # noqa: BLE001 - any delivery failure is retried, then logged
                    if attempt + 1 == self._attempts:
                        log.error("dropping %s event of job %s: %s", event.get("type"), event.get("job_id"), exc)
                    else:
                        time.sleep(min(2.0**attempt, 10.0))


class _ControllerReporter:
    """Sends an event to the named controller actor and waits until it is accepted."""

    def __init__(self, controller_name: str, namespace: str, timeout_s: float):
        self._name = controller_name
        self._namespace = namespace
        self._timeout_s = timeout_s
        self._handle = None

    def __call__(self, event: dict) -> None:
        import ray

        if self._handle is None:
            self._handle = ray.get_actor(self._name, namespace=self._namespace)
        try:
            ray.get(self._handle.report.remote(event), timeout=self._timeout_s)
        except Exception:
            self._handle = None  # look the controller up again: it may have been re-created
            raise


class _Run:
    """One job running (or being launched) on this worker."""

    def __init__(self, job: dict):
        self.job = job
        self.job_id: str = job["job_id"]
        self.run_id: str = job["run_id"]
        self.proc: subprocess.Popen | None = None
        self.recorder = None
        self.meters: list = []
        self.cancel_requested = False
        self.stop_outcome = "cancelled"  # what a requested stop is reported as
        self.capper = None  # the PowerCapper holding this run's GPUs' limits, restored when it ends
        self.progress: dict | None = None
        self.progress_reported: dict | None = None
        self.result: dict | None = None
        self.error_message: str | None = None
        self.stderr_path: Path | None = None
        self.stderr_offset = 0
        self.lock = threading.Lock()


class GpuWorker:
    """Runs one job at a time on its GPU(s) in a child process, meters it, and reports events to the controller.

    ``reporter`` is a test seam: a function that takes one event dict; by default events go to the controller
    actor named ``controller_name`` in ``namespace``.
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
        deliver = reporter or _ControllerReporter(controller_name, namespace, self.options["report_timeout_s"])
        self._outbox = _Outbox(deliver, self.options["report_attempts"])
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._description: dict | None = None

    # --- queries -------------------------------------------------------------------------------------------

    def describe(self) -> dict:
        """Who and where this worker is: ids, node, zone, GPUs, and the GPU's power range (W)."""
        if self._description is None:
            self._description = self._describe()
        return dict(self._description)

    def busy(self) -> str | None:
        """The id of the job this worker runs, or None when idle."""
        with self._lock:
            return self._run.job_id if self._run else None

    # --- commands ------------------------------------------------------------------------------------------

    def start(self, job: dict) -> None:
        """Launch ``job`` in a child process and return at once; its outcome arrives as events.

        job: ``{job_id, run_id, kind, spec, workdir, gpu_ids, power_cap_w}``; ``gpu_ids`` are all the GPUs of the
        job (this worker's and its co-workers' on the same node). Raises ``WorkerBusy`` when a job is running,
        ``ValueError`` when a key is missing. A launch that fails after that is reported as ``finished/failed``.
        """
        missing = [k for k in ("job_id", "run_id", "kind", "spec", "workdir") if k not in job]
        if missing:
            raise ValueError(f"job is missing {missing}")
        run = _Run(dict(job))
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

        Returns False when this worker does not run ``job_id``. The ``finished`` event says ``outcome``:
        ``cancelled``, or ``suspended`` when the scheduler pauses an interruptible job at a checkpoint.
        """
        if outcome not in STOP_OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(STOP_OUTCOMES)}, got {outcome!r}")
        with self._lock:
            run = self._run
        if run is None or run.job_id != job_id or run.proc is None:
            return False
        if run.cancel_requested:
            if outcome == "cancelled":  # a user's cancel overrides a pending suspension
                run.stop_outcome = outcome
            return True  # a second SIGTERM would kill the job in the middle of its checkpoint
        run.cancel_requested = True
        run.stop_outcome = outcome
        _signal_group(run.proc, signal.SIGTERM)
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
            _signal_group(run.proc, signal.SIGTERM)
        try:
            run.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(run.proc, signal.SIGKILL)
            run.proc.wait()

    # --- internals -----------------------------------------------------------------------------------------

    def _describe(self) -> dict:
        import ray

        from workers.meters import factory

        ctx = ray.get_runtime_context()
        labels = ctx.get_node_labels() or {}
        gpu_ids = list(ray.get_gpu_ids())
        # Logical: Ray declares GPUs that NVML does not have (no GPU at all, or more declared than present).
        physical = factory.physical_gpu_count()
        logical = not gpu_ids or not all(isinstance(i, int) and 0 <= i < physical for i in map(_as_index, gpu_ids))
        zone = labels.get(ZONE_LABEL) or (self.options["logical_zone"] if logical else None) or self.options["zone"]
        info = {
            "worker_id": self.worker_id,
            "node_id": ctx.get_node_id(),
            "hostname": socket.gethostname(),
            "zone": zone,
            "gpu_ids": gpu_ids,
            "logical": logical,
        }
        info.update(_gpu_power_info(gpu_ids, logical, self.options["gpu_type"]))
        return info

    def _launch(self, run: _Run) -> None:
        from workers.meters.factory import open_cpu_meter, open_gpu_meter
        from workers.meters.recorder import EnergyRecorder

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

        power_cap = self._apply_power_cap(run, gpu_ids, job.get("power_cap_w"))

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
                [_as_index(g) for g in gpu_ids],
                pid=pid,
                gpu_type=self.options["gpu_type"],
                mode=self.options["meter_mode"],
                power_cap_w=job.get("power_cap_w"),
            )
            run.meters.append(gpu_meter)
            cpu_meter = open_cpu_meter(pid)
            run.meters.append(cpu_meter)
            run.recorder = EnergyRecorder(gpu_meter, cpu_meter, interval_s=self.options["sample_interval_s"])
            run.recorder.start()
        except Exception as exc:
            raise MeterError(f"could not open energy meters: {exc}") from exc

        self._outbox.put(
            {
                "type": "started",
                "job_id": run.job_id,
                "run_id": run.run_id,
                "worker_id": self.worker_id,
                "node_id": self.describe()["node_id"],
                "gpu_ids": gpu_ids,
                "pid": pid,
                "at": time.time(),
                "gpu_method": gpu_meter.method,
                "cpu_method": cpu_meter.method,
                "power_cap": power_cap,
            }
        )
        speed = float(job.get("speed") or 1.0)
        if power_cap and power_cap["mode"] == "simulated" and speed < 1.0:
            threading.Thread(target=self._pace, args=(run, speed), name=f"pace-{run.job_id}", daemon=True).start()
        reader = threading.Thread(target=self._read_stdout, args=(run, workdir / "events.jsonl"), daemon=True)
        reader.start()
        threading.Thread(target=self._monitor, args=(run, reader), name=f"monitor-{run.job_id}", daemon=True).start()

    def _apply_power_cap(self, run: _Run, gpu_ids: list, cap_w: float | None) -> dict | None:
        """Cap a physical GPU job's power (dry run by default); logical GPUs are capped in their simulated meter.

        Returns what was (or, in a dry run, would have been) applied, for the ``started`` event.
        """
        if cap_w is None or self.describe()["logical"]:
            return None if cap_w is None else {"requested_w": cap_w, "applied_w": cap_w, "mode": "simulated"}
        from workers.power_cap import PowerCapper

        run.capper = PowerCapper([_as_index(g) for g in gpu_ids], dry_run=self.options["power_cap_dry_run"])
        results = run.capper.apply(cap_w)
        return {"requested_w": cap_w, "applied_w": min(r.applied_w for r in results),
                "mode": "dry-run" if run.capper.dry_run else "nvml"}

    def _pace(self, run: _Run, speed: float) -> None:
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
                _signal_group(run.proc, signal.SIGSTOP)
                stop.wait(pause_s)
                _signal_group(run.proc, signal.SIGCONT)
        finally:
            if run.proc.poll() is None:
                _signal_group(run.proc, signal.SIGCONT)

    def _abort_launch(self, run: _Run, reason: str) -> None:
        """Clean up a launch that failed part-way and report the job as failed."""
        if run.proc is not None and run.proc.poll() is None:
            _signal_group(run.proc, signal.SIGKILL)
            run.proc.wait()
        energy = None
        if run.recorder is not None:
            try:
                energy = run.recorder.stop().to_dict()
            except Exception:  # noqa: BLE001 - the failure being reported matters more
                log.exception("could not stop the recorder of job %s", run.job_id)
        for meter in run.meters:
            meter.close()
        if run.capper is not None:
            run.capper.restore()
        self._finish(run, "failed", run.proc.returncode if run.proc else None, reason, energy, [])

    def _read_stdout(self, run: _Run, events_path: Path) -> None:
        """Keep the child's JSON lines (in events.jsonl) and remember its latest progress, result or error."""
        with open(events_path, "a") as sink:
            for line in run.proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    message = json.loads(line)
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except ValueError:
                    message = {"event": "stdout", "line": line}
                sink.write(json.dumps(message) + "\n")
                sink.flush()
                kind = message.get("event")
                with run.lock:
                    if kind == "progress":
                        run.progress = {k: v for k, v in message.items() if k != "event"}
                    elif kind == "result":
                        run.result = message.get("result")
                    elif kind == "error":
                        run.error_message = str(message.get("message"))

    def _monitor(self, run: _Run, reader: threading.Thread) -> None:
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
        _signal_group(run.proc, signal.SIGKILL)
        reader.join(timeout=10)
        energy, samples = None, []
        try:
            totals = run.recorder.stop()
            samples = [s.to_list() for s in run.recorder.drain_samples()]
            energy = totals.to_dict()
        except Exception:  # noqa: BLE001 - the job's outcome is still reported
            log.exception("could not stop the recorder of job %s", run.job_id)
        for meter in run.meters:
            meter.close()
        if run.capper is not None:
            run.capper.restore()
        code = run.proc.returncode
        with run.lock:
            result, message = run.result, run.error_message
        if run.cancel_requested and not (code == 0 and result is not None):
            status, error = run.stop_outcome, None
        elif code == 0 and result is not None and message is None:
            status, error = "succeeded", None
        else:
            status = "failed"
            error = message or self._stderr_tail(run) or _describe_exit(code)
            if code == 0 and result is None and message is None:
                error = "the job process exited without reporting a result"
        self._finish(run, status, code, error, energy, samples, result=result)

    def _report_progress(self, run: _Run) -> None:
        samples = [s.to_list() for s in run.recorder.drain_samples()]
        with run.lock:
            progress = run.progress
        if not samples and progress is run.progress_reported:
            return
        run.progress_reported = progress
        self._outbox.put(
            {
                "type": "progress",
                "job_id": run.job_id,
                "run_id": run.run_id,
                "at": time.time(),
                "progress": dict(progress or {}),
                "samples": samples,
            }
        )

    def _finish(self, run, status, exit_code, error, energy, samples, result=None) -> None:
        with self._lock:
            if self._run is run:
                self._run = None
        self._outbox.put(
            {
                "type": "finished",
                "job_id": run.job_id,
                "run_id": run.run_id,
                "worker_id": self.worker_id,
                "at": time.time(),
                "exit_status": status,
                "exit_code": exit_code,
                "result": result,
                "error": error,
                "energy": energy,
                "samples": samples,
            }
        )

    def _stderr_tail(self, run: _Run) -> str:
        try:
            with open(run.stderr_path, "rb") as f:
                f.seek(run.stderr_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-STDERR_TAIL_LINES:])

    def _kill_if_running(self, run: _Run) -> None:
        if run.proc.poll() is None:
            log.warning("job %s ignored SIGTERM for %ss; killing it", run.job_id, self.options["cancel_grace_s"])
            _signal_group(run.proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the child's whole session (it is its own process group leader)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "the job process did not start"
    if code < 0:
        return f"the job process was killed by {signal.Signals(-code).name}"
    return f"the job process exited with code {code}"


def _as_index(gpu_id) -> int | str:
    """Ray reports GPU ids as ints or as strings (UUIDs when CUDA_VISIBLE_DEVICES holds them)."""
    try:
        return int(gpu_id)
    except (TypeError, ValueError):
        return gpu_id


def _gpu_power_info(gpu_ids: list, logical: bool, gpu_type: str) -> dict:
    """The GPU's name and power range (W): from NVML for a physical GPU, from the GPU type table otherwise.

    idle_power_w is a nominal figure from the table (NVML has no idle reading); None for a model not in it.
    """
    from workers.meters.gpu_types import GPU_TYPES, lookup_gpu_type

    if logical or not gpu_ids:
        spec = lookup_gpu_type(gpu_type)
        return {"gpu_name": spec.name, "max_power_w": float(spec.max_w), "idle_power_w": float(spec.idle_w)}
    from workers.meters import nvml

    info = nvml.gpu_info(_as_index(gpu_ids[0]))
    name = info["name"].decode() if isinstance(info["name"], bytes) else str(info["name"])
    # NVML says "NVIDIA A100-SXM4-40GB"; the table's key is the model part. Longest key first: -80GB before -8.
    spec = next((GPU_TYPES[k] for k in sorted(GPU_TYPES, key=len, reverse=True) if k.lower() in name.lower()), None)
    return {
        "gpu_name": name,
        "max_power_w": float(info["max_power_w"]),
        "idle_power_w": float(spec.idle_w) if spec else None,
    }
