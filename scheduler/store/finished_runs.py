"""Succeeded runs as the store hands them to estimates: kind, spec, result, length and GPU energy.

The store reads them (``JobStore.recent_finished_runs``, ``JobStore.finished_run``); the daemon's estimates
(``scheduler.daemon.estimates``) learn run lengths and power draws from them. They are defined here, below both,
so the store does not depend on the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: How many of the latest succeeded runs (of all kinds) the store returns by default, and estimates learn from.
RECENT_RUNS = 200


@dataclass(frozen=True)
class FinishedRun:
    """What an estimate learns from: a succeeded run's kind, spec, result, length and GPU energy."""

    kind: str
    spec: dict[str, Any]
    result: dict[str, Any] | None
    duration_s: float
    gpu_energy_j: float
    gpus: int
