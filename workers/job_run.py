"""One job running on a worker: its child process, meters and cap, what the child said, and how it ended.

The child is ``python -m workers.job_process`` in its own session; its stdout lines (JSON) are kept in
``workdir/events.jsonl`` and its stderr in ``workdir/stderr.log`` (appended, one header line per run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from workers.events import ExitStatus, PowerCap

#: How many trailing lines of the child's stderr a failed job reports.
STDERR_TAIL_LINES = 20


class JobRun:
    """One job running (or being launched) on a worker."""

    def __init__(self, job: dict[str, Any]):
        self.job = job
        self.job_id: str = job["job_id"]
        self.run_id = job["run_id"]
        self.proc: subprocess.Popen | None = None
        self.recorder = None
        self.meters: list = []
        self.cancel_requested = False
        self.stop_outcome = ExitStatus.CANCELLED  # what a requested stop is reported as
        self.capper = None  # the PowerCapper holding this run's GPUs' limits, restored when it ends
        self.power_cap: PowerCap | None = None  # how its cap was applied; None when none was asked
        self.progress: dict | None = None
        self.progress_reported: dict | None = None
        self.result: dict | None = None
        self.error_message: str | None = None
        self.stderr_path: Path | None = None
        self.stderr_offset = 0
        self.lock = threading.Lock()

    def signal(self, sig: int) -> None:
        """Signal the child's whole session (it is its own process group leader)."""
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def read_stdout(self, events_path: Path) -> None:
        """Keep the child's JSON lines (in events.jsonl) and remember its latest progress, result or error."""
        with open(events_path, "a") as sink:
            for line in self.proc.stdout:
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
                with self.lock:
                    if kind == "progress":
                        self.progress = {k: v for k, v in message.items() if k != "event"}
                    elif kind == "result":
                        self.result = message.get("result")
                    elif kind == "error":
                        self.error_message = str(message.get("message"))

    def outcome(self) -> tuple[ExitStatus, str | None]:
        """How the exited child ended, and the error to report (None unless it failed)."""
        code = self.proc.returncode
        with self.lock:
            result, message = self.result, self.error_message
        if self.cancel_requested and not (code == 0 and result is not None):
            return self.stop_outcome, None
        if code == 0 and result is not None and message is None:
            return ExitStatus.SUCCEEDED, None
        if code == 0 and result is None and message is None:
            return ExitStatus.FAILED, "the job process exited without reporting a result"
        return ExitStatus.FAILED, message or self.stderr_tail() or describe_exit(code)

    def stderr_tail(self) -> str:
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(self.stderr_offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "\n".join(lines[-STDERR_TAIL_LINES:])


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the job process did not start"
    if code < 0:
        return f"the job process was killed by {signal.Signals(-code).name}"
    return f"the job process exited with code {code}"
