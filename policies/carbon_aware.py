"""The project's best policy: shift work in time and space, suspend and resume, cap power, keep deadlines."""

from __future__ import annotations

from policies.framework import Profile, ProfilePolicy
from policies.plugins import assemble
from policies.plugins.carbon import PRESENT_MARGIN_G_PER_KWH, RESUME_MARGIN_S, ROOM_MARGIN_S


def carbon_aware_profile(history_model: bool = True, min_saving_fraction: float = 0.0,
                         min_stretch_s: float = 0.0, room_margin_s: float = ROOM_MARGIN_S,
                         resume_margin_s: float = RESUME_MARGIN_S,
                         present_margin_g_per_kwh: float = PRESENT_MARGIN_G_PER_KWH) -> Profile:
    """The ``carbon-aware`` profile (see ``policies.plugins.carbon`` for what each plugin decides, and
    ``policies.plugins.holds`` for the room big jobs keep to meet their deadlines).

    history_model: with a history-only forecast, forecast from daily/weekly profiles and the recent level
    instead of replaying yesterday. min_saving_fraction: wait only for at least this share of saving.
    min_stretch_s: the shortest stretch an interruptible job runs before it may be suspended again.
    room_margin_s: how much slack a job keeps when it waits for room in its cleanest zone.
    resume_margin_s: how much slack an interruptible job keeps when it is suspended, to resume in.
    present_margin_g_per_kwh: with a forecast learned from history, how much cleaner (g/kWh) a later start must be
    forecast than the measured present to be waited for.
    """
    return assemble(
        "carbon-aware", pre_filters=("CarbonPlanner", "DeadlineHolds", "QueuePressure"), queue_sort="UrgencyFirst",
        filters=("NodeCapacity", "PowerBudget", "DeadlineHolds"),
        # the listed zone order only breaks ties between equally clean zones
        scorers=(("CarbonOverRun", 1.0), ("ZoneOrder", 1e-6)),
        permits=("CarbonWindow",), cap_chooser="CarbonCap", preemptors=("Preempt",),
        config={"CarbonPlanner": {"history_model": history_model,
                                  "present_margin_g_per_kwh": present_margin_g_per_kwh},
                "CarbonWindow": {"min_saving_fraction": min_saving_fraction, "room_margin_s": room_margin_s},
                "CarbonCap": {"min_stretch_s": min_stretch_s, "resume_margin_s": resume_margin_s}})


class CarbonAwarePolicy(ProfilePolicy):
    """``carbon-aware``: time and space shifting, suspend/resume, power caps, the budget, deadlines kept."""

    name = "carbon-aware"

    def __init__(self, history_model: bool = True, min_saving_fraction: float = 0.0,
                 min_stretch_s: float = 0.0, room_margin_s: float = ROOM_MARGIN_S,
                 resume_margin_s: float = RESUME_MARGIN_S,
                 present_margin_g_per_kwh: float = PRESENT_MARGIN_G_PER_KWH) -> None:
        super().__init__(carbon_aware_profile(history_model, min_saving_fraction, min_stretch_s, room_margin_s,
                                              resume_margin_s, present_margin_g_per_kwh))
