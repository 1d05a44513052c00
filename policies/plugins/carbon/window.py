"""The carbon window (Permit): a job waits on purpose while its plan says a later start (or, for an interruptible
job, later pieces of time) emits less and its deadline still holds, or for room in its cleanest zone."""

from __future__ import annotations

import math

from policies.carbon_search import NOW_EPS_S
from policies.framework import CycleState
from policies.history_forecast import COLD_START_S, GRID_S
from policies.plugins.carbon.planner import JobPlan, plan_of
from policies.plugins.pressure import pressure_of
from policies.snapshot import JobRequest
from policies.status import SUCCESS, Code, Status

# A job waits for room in its cleanest zone only while its latest start is at least this far off.
ROOM_MARGIN_S = 2 * 3600.0
# The shortest wait before a job deferred on a history-only forecast is reconsidered.
RECHECK_MIN_S = 3 * 3600.0
# The same in a zone's cold start (less than ``COLD_START_S`` of its actual history, as the forecast says), where the
# forecast is the history model's blend of simple forecasts and each look may move the best start on its noise.
# On the first four weeks of history (benchmarks/cold_start.py, DE and FR from 6 January 2020; history only / with
# the shape prior) six hours instead of three took the share of the best possible reduction from 39.4 / 46.6 % to
# 39.2 / 47.3 % (DE) and 38.1 / 44.4 % to 39.8 / 46.4 % (FR), and did as well or better from 6 April and 6 July;
# looking again every hour did worse in all four January runs. The 2020 years barely moved (DE-2020 67.3 %).
COLD_RECHECK_MIN_S = 6 * 3600.0
# A re-check falls on the next boundary of the grid a history model's forecast is issued on (GRID_S, 30 minutes):
# a look a few minutes earlier sees the same forecast, and the jobs deferred in the meantime are looked at again
# together, in one decision round instead of one each (on the 100k-job year of benchmarks/carbon_policies.py
# --perf under a history-only forecast: 290,000 rounds -> 160,000).


class CarbonWindow:
    """Permit: hold a job back while the plan says a later moment emits less (never past its latest start).

    min_saving_fraction: wait only when the saving is at least this share of starting now (0: any saving).
    room_margin_s: a job whose cleanest zone is full waits for room there only while its latest start is at least
    this far off; with less slack it starts in a zone that has room. Waiting to the very last moment is a bet that
    room frees in time: on a congested cluster it loses, and then every other zone and the power are taken too.
    """

    name = "CarbonWindow"

    def __init__(self, min_saving_fraction: float = 0.0, room_margin_s: float = ROOM_MARGIN_S):
        if room_margin_s < 0:
            raise ValueError(f"room_margin_s must be >= 0, got {room_margin_s}")
        self.min_saving_fraction = min_saving_fraction
        self.room_margin_s = room_margin_s

    def permit(self, state: CycleState, job: JobRequest, zone: str) -> Status:
        plan = plan_of(state, job)
        now = state.now_s
        if plan is None or plan.must_start:
            return SUCCESS
        hold = state.holds.get(job.job_id)
        if hold is not None and now >= hold.start_s - NOW_EPS_S:
            return SUCCESS  # its hold has begun: it starts while the room is there (see policies.plugins.holds)
        if plan.slots is not None:
            return self._permit_slots(state, job, plan, zone)
        now_g = plan.now_cost_g[zone][0]
        if plan.best_start_s <= now + NOW_EPS_S or now_g - plan.best_cost_g <= self.min_saving_fraction * now_g:
            if plan.best_start_s <= now + NOW_EPS_S and plan.best_zone != zone \
                    and now_g > plan.now_cost_g[plan.best_zone][0] * (1 + self.min_saving_fraction) + 1e-12:
                # the cleanest zone is full now: wait for room there rather than run dirtier elsewhere
                return self._wait_for_room(state, job, plan, now)
            return SUCCESS
        if not _may_defer(state, job, plan.best_start_s):
            return SUCCESS
        return Status(Code.WAIT, self.name,
                      f"carbon: waiting {_span(plan.best_start_s - now)} to start in zone {plan.best_zone} "
                      f"(forecast {plan.best_cost_g / 1000:.3f} kg vs {now_g / 1000:.3f} kg now)",
                      retry_at_s=_look_again_at(state, plan.best_start_s, plan.best_zone))

    def _wait_for_room(self, state: CycleState, job: JobRequest, plan: JobPlan, now: float) -> Status:
        """Wait for room in the plan's zone until the margin before the latest start (then start elsewhere)."""
        give_up_s = plan.latest_start_s - self.room_margin_s
        if now >= give_up_s - NOW_EPS_S or not _may_defer(state, job, give_up_s):
            return SUCCESS
        return Status(Code.UNSCHEDULABLE, self.name, f"waiting for room in zone {plan.best_zone}", retry_at_s=give_up_s,
                      room_in=(plan.best_zone,))

    def _permit_slots(self, state: CycleState, job: JobRequest, plan: JobPlan, zone: str) -> Status:
        now = state.now_s
        if plan.best_start_s <= now + NOW_EPS_S:
            if plan.best_zone == zone or plan.now_intensity[zone] <= plan.slots.marginal():
                return SUCCESS
            return self._wait_for_room(state, job, plan, now)
        if not _may_defer(state, job, plan.best_start_s):
            return SUCCESS
        return Status(Code.WAIT, self.name,
                      f"carbon: waiting {_span(plan.best_start_s - now)} for a cleaner window in zone {plan.best_zone} "
                      f"({plan.slots.values[plan.slots.allotted_s > 0].min():.0f} g/kWh vs "
                      f"{plan.now_intensity[plan.best_zone]:.0f} now)",
                      retry_at_s=_look_again_at(state, plan.best_start_s, plan.best_zone))


def _may_defer(state: CycleState, job: JobRequest, ready_s: float) -> bool:
    """Whether the whole queue's demand still fits before its deadlines if ``job`` waits until ``ready_s``
    (``policies.plugins.pressure``); a deferral that does fit is booked for the rest of the cycle."""
    pressure = pressure_of(state)
    return pressure is None or pressure.defer(job, ready_s)


def _look_again_at(state: CycleState, start_s: float, zone: str) -> float:
    """When to reconsider a job deferred to ``start_s`` in ``zone``: then, or, on a forecast learned from history
    (a ``history_only`` one, or the zone's ``learned`` one), halfway there (at least three hours on, six in the
    zone's cold start; at the next boundary of the forecast's 30-minute grid), since such a forecast improves as the hour nears
    and may move the best start."""
    forecast, now = state.snapshot.forecast, state.now_s
    if forecast is None or not (forecast.history_only or forecast.learned(zone)):
        return start_s
    cold = now - forecast.history_start_s(zone) < COLD_START_S  # -inf: no known beginning, so no cold start
    at = now + max(COLD_RECHECK_MIN_S if cold else RECHECK_MIN_S, (start_s - now) / 2)
    return min(start_s, math.ceil(at / GRID_S) * GRID_S)


def _span(seconds: float) -> str:
    """A wait as people say it: 45 s, 12 min, 2.0 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
