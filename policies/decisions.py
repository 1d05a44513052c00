"""What a policy answers: start a job on given GPUs, let it wait, or suspend a running one, with the reason a user
reads."""

from __future__ import annotations

from dataclasses import dataclass

from policies.snapshot import Hold


@dataclass(frozen=True)
class Start:
    """Start ``job_id`` now on ``gpu_ids`` (all on ``node_id``, in ``zone``), at ``power_cap_w`` (None: default).

    cap_fraction: the cap as a fraction of the GPUs' maximum power (1.0 = full power), for clusters that know
    fractions rather than watts. until_s: run until then, then suspend the job and ask the policy again (only
    for interruptible jobs; None = run to completion). On a zone pool ``node_id`` is the zone and ``gpu_ids``
    is empty.
    """

    job_id: str
    node_id: str
    zone: str
    gpu_ids: tuple[str, ...]
    power_cap_w: float | None = None
    reason: str = ""
    cap_fraction: float = 1.0
    until_s: float | None = None


@dataclass(frozen=True)
class Wait:
    """Leave ``job_id`` waiting.

    deferred: True when the policy holds the job back on purpose (a cleaner window is coming), False when it
    simply cannot run yet (no room). ``reason`` is shown to the user as it is. retry_at_s: when a deferred job
    should be offered again (None: whenever the cluster changes). hold: the room the job keeps meanwhile, which the
    caller hands back in later snapshots until the job is offered again (None: none). room_in: a job that waits
    for room only needs offering again when room frees in one of these zones (empty: when it frees anywhere), or
    at ``retry_at_s``.
    """

    job_id: str
    reason: str
    deferred: bool = False
    retry_at_s: float | None = None
    hold: Hold | None = None
    room_in: tuple[str, ...] = ()


@dataclass(frozen=True)
class Suspend:
    """Suspend running ``job_id`` now, to make room or power for a job that is due (interruptible jobs only: it
    stops at a checkpoint and waits again). A policy lists it before the start it makes room for."""

    job_id: str
    reason: str


Decision = Start | Wait | Suspend
