"""Why a plugin said "not now" or "never": a code, the plugin's name and a reason a user can read.

Expected outcomes are statuses, not exceptions (as in the Kubernetes scheduling framework): "unschedulable:
zone DE is full" and "unresolvable: no node in zone DE has 8 GPUs" are different answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Code(str, Enum):
    """SUCCESS: go on. UNSCHEDULABLE: not now (no room, no budget). UNRESOLVABLE: never, as the cluster is.
    WAIT: on purpose, for a better moment (``Status.retry_at_s``)."""

    SUCCESS = "Success"
    UNSCHEDULABLE = "Unschedulable"
    UNRESOLVABLE = "UnschedulableAndUnresolvable"
    WAIT = "Wait"


@dataclass(frozen=True)
class Status:
    """One plugin's answer about one job. room_in: for a job that waits for room only, the zones where room
    freeing could let it start (empty: anywhere, or it waits for something else)."""

    code: Code
    plugin: str = ""
    reason: str = ""
    retry_at_s: float | None = None
    room_in: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS


SUCCESS = Status(Code.SUCCESS)
