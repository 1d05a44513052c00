"""One job running on a worker: its processes (a ``workers.launcher.Launcher``), meters and cap, what its processes
said, and how the run ended.

A kind that runs in ``workers.job_process`` reports on each process's stdout (JSON lines, kept in
``workdir/events.jsonl``); the main process's (lowest rank's) progress and result are the job's, and any
process's error line explains a failure. A ``command`` job's processes write wherever they like: their stdout and
stderr go to ``workdir/stderr.log``, and their progress lines to the progress file (``workers.progress_file``).
Every run appends to ``stderr.log`` after a header line.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import IO, Any

from workers.events import ExitStatus, PowerCap
from workers.launcher import Launcher, RankFailure, describe_returncode
from workers.memory_limit import GIB, describe_limit
from workers.progress_file import ProgressFile

#: How many trailing lines of the job's stderr a failed job reports.
STDERR_TAIL_LINES = 20
#: What a command refused memory usually prints last (Python, C++, glibc's strerror, CUDA and others): with a
#: memory limit set, its failure then says the limit was reached.
OUT_OF_MEMORY_WORDS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


class JobRun:
    """One job running (or being launched) on a worker.

    stop_requested: a stop was asked (cancel, suspension, shutdown); when it comes before the processes exist,
    the launch sees it and starts nothing. stop_outcome: what that stop is reported as.
    """

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.job_id: str = job["job_id"]
        self.run_id = job["run_id"]
        self.launcher: Launcher | None = None
        self.protocol = True  # the processes speak job_process's stdout protocol (False: a command)
        self.main_rank = 0  # the rank whose progress and result are the job's
        self.stop_signal = signal.SIGTERM
        self.grace_s = 0.0
        self.recorder = None
        self.meters: list = []
        self.stop_requested = False
        self.stop_outcome = ExitStatus.CANCELLED
        self.capper = None  # the PowerCapper holding this run's GPUs' limits, restored when it ends
        self.power_cap: PowerCap | None = None  # how its cap was applied; None when none was asked
        self.progress: dict | None = None
        self.progress_reported: dict | None = None
        self.progress_file: ProgressFile | None = None
        self.result: dict | None = None
        self.errors: dict[int, str] = {}  # rank -> its error line
        self.stderr_path: Path | None = None
        self.stderr_offset = 0
        self.lock = threading.Lock()
        self._sink_lock = threading.Lock()

    @property
    def processes(self) -> int:
        return len(self.launcher.specs) if self.launcher else 0

    def read_stdout(self, rank: int, stdout: IO[str], sink: IO[str]) -> None:
        """Keep one process's JSON lines (in events.jsonl) and remember the job's progress, result and errors."""
        for line in stdout:
            line = line.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
            except ValueError:
                message = {"event": "stdout", "line": line}
            if self.processes > 1:
                message.setdefault("rank", rank)
            with self._sink_lock:
                sink.write(json.dumps(message) + "\n")
                sink.flush()
            kind = message.get("event")
            with self.lock:
                if kind == "error":
                    self.errors[rank] = str(message.get("message"))
                elif rank != self.main_rank:
                    continue
                elif kind == "progress":
                    self.progress = {k: v for k, v in message.items() if k not in ("event", "rank")}
                elif kind == "result":
                    self.result = message.get("result")

    def read_progress_file(self) -> None:
        """Take the latest good line of a command's progress file as the job's progress."""
        if self.progress_file is not None:
            progress = self.progress_file.read()
            if progress is not None:
                with self.lock:
                    self.progress = progress

    # --- how it ended --------------------------------------------------------------------------------------

    def exit_code(self) -> int | None:
        """The failing process's exit code, else the first non-zero one in rank order, else 0 (None: none ran).

        Negative: killed by that signal (as ``subprocess`` reports it)."""
        if self.launcher is None or not self.launcher.returncodes:
            return None
        if self.launcher.failure is not None:
            return self.launcher.failure.returncode
        codes = [self.launcher.returncodes[r] for r in sorted(self.launcher.returncodes)]
        return next((c for c in codes if c != 0), 0)

    def outcome(self) -> tuple[ExitStatus, str | None]:
        """How the run ended once every process has exited, and the error to report (None unless it failed).

        A process that failed while no stop was asked fails the run, naming its rank and the cause. Otherwise a
        requested stop is reported as asked (``stop_outcome``) unless the job had finished all the same.
        """
        launcher = self.launcher
        with self.lock:
            result, errors = self.result, dict(self.errors)
        if launcher.failure is not None:
            return ExitStatus.FAILED, self._failure_message(launcher.failure, errors)
        codes = launcher.returncodes.values()
        if self.protocol:
            finished = all(c == 0 for c in codes) and result is not None
        else:  # a command that ended before the stop signal reached it has finished; after, it has stopped
            finished = all(c == 0 for c in codes) and not launcher.signalled
        if self.stop_requested and not finished:
            return self.stop_outcome, None
        if finished and not errors:
            return ExitStatus.SUCCEEDED, None
        if self.protocol and all(c == 0 for c in codes) and result is None and not errors:
            return ExitStatus.FAILED, "the job process exited without reporting a result"
        return ExitStatus.FAILED, (next(iter(errors.values()), None) or self.stderr_tail()
                                   or f"the job's processes {describe_returncode(self.exit_code())}")

    def command_result(self) -> dict[str, Any]:
        """A command job's result: whether it was stopped, each rank's exit code, and its progress lines."""
        launcher = self.launcher
        return {
            "stopped": launcher.signalled,
            "exit_codes": {str(rank): code for rank, code in sorted(launcher.returncodes.items())},
            "progress_lines": self.progress_file.lines if self.progress_file else 0,
            "progress_lines_ignored": self.progress_file.ignored if self.progress_file else 0,
        }

    def _failure_message(self, failure: RankFailure, errors: dict[int, str]) -> str:
        several = self.processes > 1
        who = f"rank {failure.rank} of {self.processes}" if several else (
            "the job process" if self.protocol else "the command")
        first = f"{who} {failure.cause}" + ("; the other ranks were stopped" if several else "")
        if self.protocol and failure.rank in errors:  # the job's own words say more than its exit code
            return f"{who}: {errors[failure.rank]}" if several else errors[failure.rank]
        tail = self.stderr_tail()
        limit_gib = (self.job.get("launch") or {}).get("memory_limit_gib")
        if limit_gib and any(words in tail for words in OUT_OF_MEMORY_WORDS):  # refused memory past its own limit
            first += f" ({describe_limit(int(limit_gib * GIB))})"
        # The cause last, as in a traceback: the line that the job's reason shows
        return f"{tail}\n{first}" if tail else first

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self.stderr_offset)
                text = f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-STDERR_TAIL_LINES:])
