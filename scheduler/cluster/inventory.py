"""The GPUs the controller reports, as the daemon keeps them between ticks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class GpuInfo:
    """What the daemon knows of one worker's GPU (from the controller's inventory)."""

    worker_id: str
    node_id: str
    zone: str
    busy_job: str | None
    raw: dict[str, Any]
