"""The carbon-agnostic baseline: start each job as soon as it fits, in arrival order, at full power."""

from __future__ import annotations

from policies.framework import Profile, ProfilePolicy
from policies.plugins import assemble


def fifo_profile() -> Profile:
    """Arrival order; home zone when it has room, else the first allowed zone with room; full power."""
    return assemble("fifo", queue_sort="ArrivalOrder", filters=("NodeCapacity", "PowerBudget"),
                    scorers=(("ZoneOrder", 1.0),), cap_chooser="FullPower", config={"FullPower": {"label": "fifo"}})


class FifoPolicy(ProfilePolicy):
    """Start waiting jobs in arrival order: home zone when it has room, else the first allowed zone with room.

    A job that does not fit now waits; later jobs that fit may still start (the queue is not blocked by a
    large job at its head).
    """

    name = "fifo"

    def __init__(self) -> None:
        super().__init__(fifo_profile())
