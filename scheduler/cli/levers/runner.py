"""Submitting a grid through the client, resumably, and waiting for it with a progress line.

Each job is submitted with an idempotency key made of the study's name, the job's name and a digest of what it
asks (kind, spec with its references resolved), so that running the study again against the same daemon finds
the jobs it made before instead of making new ones: finished jobs are reused, running ones waited for. A job that
failed or was cancelled is submitted again under a key with a retry number.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

from scheduler.cli.levers.grid import Grid, GridJob
from scheduler.client import Client, Job, WaitTimeout

KEY_PREFIX = "wattsched-levers-v1"
#: Submissions of a job that failed before the study gives up on it.
MAX_TRIES = 3
_ENDED = ("succeeded", "failed", "cancelled")
_POLL_S = 1.0


@dataclass
class Record:
    """A grid job and the daemon's job for it (None until submitted)."""

    entry: GridJob
    job: Job | None = None
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        job = self.job
        return {"name": self.entry.name, "group": self.entry.group, "family": self.entry.family,
                "lever": self.entry.lever, "kind": self.entry.kind, "reused": self.reused,
                "job": None if job is None else job.raw}


def idempotency_key(entry: GridJob, spec: dict[str, Any], attempt: int) -> str:
    """The key a job is submitted under: the same for the same job, spec and attempt."""
    digest = hashlib.sha256(json.dumps([entry.kind, spec], sort_keys=True).encode()).hexdigest()[:16]
    suffix = "" if attempt == 0 else f"-retry{attempt}"
    return f"{KEY_PREFIX}-{entry.name.replace(' ', '_')}-{digest}{suffix}"[:200]


def _resolved(spec: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """The spec with ``job:{name}`` references replaced by the named jobs' ids."""
    def swap(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("job:") and value[4:] in ids:
            return f"job:{ids[value[4:]]}"
        return value

    return {key: swap(value) for key, value in spec.items()}


def submit_grid(client: Client, grid: Grid, say: Callable[[str], None] = print) -> list[Record]:
    """Submit (or find again) every job of the grid, in order; a job's dependencies come first in a grid."""
    records, ids = [], {}
    reused = 0
    # A job submitted before this call began was made by an earlier run (the daemon's clock, give or take a
    # second of skew for a remote daemon).
    began_s = time.time() - 1.0
    for entry in grid.jobs:
        spec = _resolved(entry.spec, ids)
        depends = [ids[name] for name in entry.after]
        for attempt in range(MAX_TRIES):
            job = client.submit(entry.kind, spec, depends_on=depends or None,
                                idempotency_key=idempotency_key(entry, spec, attempt))
            if job.state not in ("failed", "cancelled"):
                break
        record = Record(entry, job, reused=job.submitted_at is not None and job.submitted_at.timestamp() < began_s)
        reused += record.reused
        records.append(record)
        ids[entry.name] = job.id
    say(f"  {len(records)} jobs: {len(records) - reused} submitted now, {reused} found from an earlier run")
    return records


def wait_for(client: Client, records: list[Record], show: Callable[[str], None]) -> None:
    """Refresh every record until all its jobs ended, calling ``show`` with a one-line summary."""
    while True:
        for record in records:
            if record.job.state not in _ENDED:
                record.job = client.get(record.job.id)
        ended = [r for r in records if r.job.state in _ENDED]
        running = [r for r in records if r.job.state == "running"]
        parts = [f"{len(ended)}/{len(records)} done"]
        failed = sum(r.job.state != "succeeded" for r in ended)
        if failed:
            parts.append(f"{failed} failed")
        for record in running:
            progress = record.job.progress or {}
            step = f" {progress['step']:.0f}/{progress['total']:.0f}" if "step" in progress and \
                progress.get("total") else ""
            parts.append(f"{record.entry.name}{step}")
        show(" | ".join(parts))
        pending = [r for r in records if r.job.state not in _ENDED]
        if not pending:
            return
        try:  # a long poll: back as soon as the first unfinished job ends
            client.wait(pending[0].job.id, timeout=_POLL_S)
        except WaitTimeout:
            pass
