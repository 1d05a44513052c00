"""What a policy answers: start a job on given GPUs, or let it wait, with the reason a user reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Start:
    """Start ``job_id`` now on ``gpu_ids`` (all on ``node_id``, in ``zone``), at ``power_cap_w`` (None: default)."""

    job_id: str
    node_id: str
    zone: str
    gpu_ids: tuple[str, ...]
    power_cap_w: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Wait:
    """Leave ``job_id`` waiting.

    deferred: True when the policy holds the job back on purpose (a cleaner window is coming), False when it
    simply cannot run yet (no room). ``reason`` is shown to the user as it is.
    """

    job_id: str
    reason: str
    deferred: bool = False


Decision = Start | Wait
