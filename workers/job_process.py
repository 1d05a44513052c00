"""The child process that runs one job: ``python -m workers.job_process --job FILE.json``.

A worker starts one process per job so that the job can be stopped (SIGTERM) or killed without harm to the
worker. FILE holds ``{"kind": a registered kind's name, "spec": {...}, "workdir": "path"}`` and, optionally,
``"stop_signal": "SIGUSR1"``, the signal that asks the job to stop (SIGTERM when absent); the kind (see
``workers.kinds``) validates the spec and runs the job.

Protocol: stdout carries only JSON objects, one per line, flushed as they happen:

    {"event": "progress", "step": ..., "total": ..., ...}   while the job runs
    {"event": "result", "result": {...}}                    last line, when the job finished or stopped
    {"event": "error", "message": "<one line>"}             last line, when the job failed

Exit codes: 0 finished; 1 failed (traceback on stderr); 128 + the stop signal's number (143 for SIGTERM) stopped
on request: an interruptible kind wrote a checkpoint first and the result line says where (sampling writes the
batches it had finished). A second stop signal kills at once. Whatever the libraries print goes to stderr, as do
the logs. A job run under a memory limit (``workers.memory_limit``) that is refused memory fails saying
"killed: memory limit of N GiB reached".

One process of a job at a time: the process locks its workdir (``.job.lock``) and one that finds it locked waits
for the holder to exit. A job requeued because its run was lost (its controller or worker died) may start again
while the lost run's process is still stopping; the new run then resumes from what that one left. Of a job run as
several processes (torchrun's ``RANK``), rank 0 takes the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from workers.errors import JobFailed, SpecError
from workers.file_modes import make_private_dir
from workers.kinds import JobContext, KindRegistry, builtin_kinds
from workers.memory_limit import LIMIT_VARIABLE, describe_limit

EXIT_OK = 0
EXIT_FAILED = 1
_JOB_KEYS = ("kind", "spec", "workdir")
#: Keys a job file may hold besides those.
_OPTIONAL_KEYS = ("stop_signal",)
#: The signals a job may be asked to stop with (as the scheduler accepts them).
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")
#: The file in a job's workdir that the job's running process holds locked.
LOCK_FILE = ".job.lock"
#: Seconds between two looks at whether an earlier process of the job has released the workdir.
LOCK_POLL_S = 0.2

log = logging.getLogger(__name__)


class StopFlag:
    """Turns the job's stop signal (SIGTERM by default) into a flag the job polls, so it can checkpoint and stop
    between two steps."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self._requested = False
        self._parent_pid = os.getppid()

    def install(self) -> None:
        signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._requested = True
        # Whoever sends a second stop signal will not wait for the checkpoint: let it kill the process.
        signal.signal(self.signum, signal.SIG_DFL)

    def __call__(self) -> bool:
        # A job whose worker died (actor or node killed) must not run on unmetered and unowned: when the
        # parent is gone (we are re-parented), stop as if cancelled, checkpoint included.
        if not self._requested and os.getppid() != self._parent_pid:
            self._requested = True
        return self._requested


def run_job(
    job: dict[str, Any], report: Callable[[dict], None], should_stop: Callable[[], bool],
    kinds: KindRegistry | None = None,
) -> dict[str, Any]:
    """Validate a job description and run it in this process with its kind; returns the job's result dict.

    kinds: where the job's kind is looked up (the built-in kinds when None).
    """
    if not isinstance(job, dict) or not set(_JOB_KEYS) <= set(job) <= {*_JOB_KEYS, *_OPTIONAL_KEYS}:
        accepted = f"a JSON object with the keys {', '.join(_JOB_KEYS)} (and optionally {', '.join(_OPTIONAL_KEYS)})"
        raise SpecError(f"job file: must be {accepted}, got {job!r}", field="job", accepted=accepted)
    if not isinstance(job["workdir"], str) or not job["workdir"]:
        accepted = "a path to the job's working directory"
        raise SpecError(f"workdir: must be {accepted}, got {job['workdir']!r}", field="workdir", accepted=accepted)
    kind = (kinds or builtin_kinds()).get(job["kind"])
    spec = kind.validate(job["spec"])
    workdir = make_private_dir(job["workdir"])
    # Every rank of a job of several processes runs here; one lock holder is enough, and the others must not wait
    # for it (they would wait for the whole job).
    lock = workdir_lock(workdir, should_stop) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()
    with lock:
        # A kind imports its heavy libraries (torch) in run(), by when SIGTERM is already handled.
        return kind.run(spec, JobContext(workdir, report, should_stop))


@contextlib.contextmanager
def workdir_lock(workdir: Path, should_stop: Callable[[], bool]) -> Iterator[None]:
    """Hold the job's workdir for this process, first waiting while another process of the job holds it.

    A POSIX lock, because it dies with its process however that ends (SIGKILL included) and forked helpers
    (data loaders) do not inherit it. Raises JobFailed when ``should_stop`` answers True while waiting.
    """
    fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        logged = False
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:  # held by another process (EAGAIN or EACCES, depending on the system)
                if should_stop():
                    raise JobFailed("stopped while waiting for an earlier process of this job to exit") from None
                if not logged:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    log.info("waiting for process %s, an earlier run of this job, to exit", holder)
                    logged = True
                time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # who holds it, for the message above and for people
        yield
    finally:
        os.close(fd)  # releases the lock


def _claim_stdout() -> TextIO:
    """Keep the real stdout for events alone and point file descriptor 1 (and sys.stdout) at stderr."""
    sys.stdout.flush()
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    # At the descriptor level, so that C extensions and subprocesses cannot write on the event stream either.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events


def _emit(events: TextIO, event: dict[str, Any]) -> None:
    # allow_nan=False: NaN is not JSON, and the reader must be able to parse every line.
    events.write(json.dumps(event, allow_nan=False) + "\n")
    events.flush()


def main(argv: list[str] | None = None) -> int:
    """Run the job in --job FILE, speaking the protocol above; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m workers.job_process", description=__doc__.splitlines()[0])
    parser.add_argument("--job", required=True, help="JSON file with kind, spec and workdir")
    args = parser.parse_args(argv)
    events = _claim_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = StopFlag()
    try:
        job = json.loads(Path(args.job).read_text())
        stop = StopFlag(stop_signal_of(job))
        stop.install()
        result = run_job(job, lambda progress: _emit(events, {"event": "progress", **progress}), stop)
    except Exception as exc:
        traceback.print_exc()
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        if isinstance(exc, MemoryError) and os.environ.get(LIMIT_VARIABLE, "").isdigit():
            # refused memory past the job's own limit (workers.memory_limit), not the node's running out
            message = f"{describe_limit(int(os.environ[LIMIT_VARIABLE]))} ({message.rstrip(': ')})"
        _emit(events, {"event": "error", "message": message})
        return EXIT_FAILED
    _emit(events, {"event": "result", "result": result})
    # 128 + the signal: what a shell reports for a process the signal ended, so both ways of stopping read alike
    return 128 + stop.signum if result["stopped"] else EXIT_OK


def stop_signal_of(job: Any) -> int:
    """The number of the signal a job file asks to be stopped with (SIGTERM when it names none)."""
    name = job.get("stop_signal", "SIGTERM") if isinstance(job, dict) else "SIGTERM"
    if name not in STOP_SIGNALS:
        accepted = "one of " + ", ".join(STOP_SIGNALS)
        raise SpecError(f"stop_signal: must be {accepted}, got {name!r}"[:300], field="stop_signal", accepted=accepted)
    return int(getattr(signal, name))


if __name__ == "__main__":
    sys.exit(main())
