"""The carbon planner (PreFilter): each waiting job's cheapest plan over its zones, caps and start times, made
once per cycle from the forecast in the snapshot and kept in the CycleState, where the other carbon plugins read
it (``plan_of``).

A job that runs in one piece is planned a start, a zone and a cap (``policies.carbon_search.run_costs``); an
interruptible one the cheapest pieces of time (``policies.carbon_plan``). With a history-only forecast
(persistence), the planner forecasts from the history itself with ``HistoryForecast`` (daily and weekly profiles
and the recent level, fitted on what it has seen).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np

from policies.carbon_plan import SlotPlan, slot_plans
from policies.carbon_search import NOW_EPS_S, run_cost_table
from policies.forecast import CarbonForecast, IntensityCurve, ZoneCurves
from policies.framework import CycleState, is_due, job_draw_w, steps_of
from policies.history_forecast import HistoryForecast
from policies.snapshot import FULL_POWER, CapStep, JobRequest
from policies.units import J_PER_KWH

# How long "waiting" lasts when ranking who loses most by waiting.
WAIT_PROBE_S = 3600.0
PLANNER = "CarbonPlanner"
# Jobs planned in one call (bounds its scratch arrays: jobs x zones, and jobs x pieces for interruptible jobs).
RUN_BATCH = 64
SLOT_BATCH = 32
# On a forecast learned from history the present is measured and the future predicted: a later start must be
# forecast cleaner than now by at least this much (g/kWh, over the energy it moves) to be waited for. Intensities
# are published to the whole g/kWh; without the margin, in a zone whose intensity barely moves, a prediction a
# hair below the measured present defers a job half an hour at a time until its slack is gone (on the 100k-job
# year under a history-only forecast: 925,000 such deferrals, and nearly three times the run time).
PRESENT_MARGIN_G_PER_KWH = 1.0


@dataclass
class JobPlan:
    """What the planner found for one job at this instant (emissions in g)."""

    must_start: bool
    deadline_s: float
    latest_start_s: float  # at full speed
    zones: tuple[str, ...]
    now_cost_g: dict[str, tuple[float, CapStep]] = field(default_factory=dict)  # zone -> best start-now option
    best_cost_g: float = 0.0
    best_start_s: float = 0.0
    best_zone: str = ""
    best_step: CapStep = FULL_POWER
    slots: SlotPlan | None = None  # interruptible jobs
    now_intensity: dict[str, float] = field(default_factory=dict)
    gain_per_gpu_h: float = 0.0


class CarbonPlanner:
    """PreFilter: each waiting job's cheapest plan over its allowed zones, caps and start times.

    Only jobs that have room somewhere now are planned (room only shrinks during a cycle, so another job's plan
    would go unread). The zones' curves share one knot grid (``ZoneCurves``), so a job's plan is one vectorised
    evaluation over all its zones and caps; the grid is kept while the forecast hands out the same curves.
    """

    name = PLANNER

    def __init__(self, history_model: bool = True, present_margin_g_per_kwh: float = PRESENT_MARGIN_G_PER_KWH):
        if not present_margin_g_per_kwh >= 0:
            raise ValueError(f"present_margin_g_per_kwh must be >= 0, got {present_margin_g_per_kwh}")
        self.history_model = history_model
        self.present_margin_g_per_kwh = present_margin_g_per_kwh
        self._learned: HistoryForecast | None = None  # a memo of a pure function of the history seen
        # memos of pure functions of their keys (the objects are kept, so an id is never reused while cached)
        self._grids: dict[tuple[str, ...], tuple[tuple[IntensityCurve, ...], ZoneCurves]] = {}
        self._steps: dict[tuple[int, int, float], tuple] = {}

    def _forecast(self, state: CycleState) -> CarbonForecast | None:
        forecast = state.snapshot.forecast
        if forecast is None or not (forecast.history_only and self.history_model):
            return forecast
        if self._learned is None or self._learned.source is not forecast:
            self._learned = HistoryForecast(forecast)
        self._learned.now_s = forecast.now_s
        return self._learned

    def pre_filter(self, state: CycleState, jobs: Sequence[JobRequest]) -> None:
        forecast = self._forecast(state)
        if forecast is None:
            return
        # a learned forecast's future is a guess beside a measured present; a given one is taken at its word. The
        # daemon's forecast is learned zone by zone (where a provider gives none): the margin holds if any is.
        learned = forecast is self._learned or any(forecast.learned(z) for z in state.zones)
        margin = self.present_margin_g_per_kwh if learned else 0.0
        now = state.now_s
        cluster, budget_w = state.cluster, state.budget_left_w
        all_zones = state.zones
        plannable: list[tuple[JobRequest, tuple[str, ...]]] = []
        for job in jobs:
            if not job.expected_duration_s or job.power_w is None:
                continue
            zones = cluster.possible_zones(job.zones or all_zones, job.gpus, job.gpus_per_node)
            if not zones:
                continue
            no_room = not any(cluster.fits(z, job.gpus, job.gpus_per_node) for z in zones)
            no_power = budget_w is not None and min(job_draw_w(job, s) for s in steps_of(job)) > budget_w + 1e-9
            if (no_room or no_power) and not is_due(job, now):
                continue  # it waits whatever its plan; one that is due may make room (Preempt)
            plannable.append((job, zones))
        if not plannable:
            return
        # far enough for every window: a late job's runs end after its deadline
        horizon_s = max(max(_deadline(j, now), now + j.expected_duration_s) for j, _ in plannable)
        needed = set(plannable[0][1]).union(*(zones for _, zones in plannable[1:]))
        grid_zones = _grid_zones(all_zones, frozenset(needed))
        zc = self._zone_curves(forecast, grid_zones, horizon_s)
        position = _positions(grid_zones)
        now_values = zc.value_at(slice(None), now).tolist()  # each grid zone's intensity now
        runs = [(job, zones) for job, zones in plannable if not job.interruptible]
        for i in range(0, len(runs), RUN_BATCH):
            for job, plan in zip((j for j, _ in runs[i:i + RUN_BATCH]),
                                 self._run_plans(runs[i:i + RUN_BATCH], now, zc, position, margin, now_values)):
                state.notes[PLANNER, job.job_id] = plan
        if len(runs) == len(plannable):
            return
        by_zones: dict[tuple[int, ...], list[JobRequest]] = {}
        for job, zones in plannable:
            if job.interruptible:
                by_zones.setdefault(tuple(position[z] for z in zones), []).append(job)
        for rows, group in by_zones.items():
            if len(group) > 1:
                group.sort(key=lambda j: max(_deadline(j, now), now + j.expected_duration_s))  # alike windows together
            zones = tuple(grid_zones[r] for r in rows)
            for i in range(0, len(group), SLOT_BATCH):
                for job, plan in zip(group[i:i + SLOT_BATCH], self._slot_plans(group[i:i + SLOT_BATCH], now, zones,
                                                                                zc, rows, margin, now_values)):
                    state.notes[PLANNER, job.job_id] = plan

    def _zone_curves(self, forecast: CarbonForecast, zones: tuple[str, ...], horizon_s: float) -> ZoneCurves:
        curves = tuple(forecast.curves(zones, max(horizon_s, forecast.now_s + 1.0)))
        cached = self._grids.get(zones)
        if cached is not None and cached[0] == curves:  # the same curves (they compare by identity)
            return cached[1]
        zc = ZoneCurves(curves)
        if len(self._grids) > 64:
            self._grids.clear()
        self._grids[zones] = (curves, zc)
        return zc

    def _cap_table(self, job: JobRequest) -> tuple[tuple[CapStep, ...], np.ndarray, np.ndarray]:
        """The job's caps, their speeds, and its emissions per unit of intensity integral at each (g per g/kWh x s)."""
        key = (id(job.power_profile), job.gpus, job.power_w)
        found = self._steps.get(key)
        if found is None or found[0] is not job.power_profile:
            steps = steps_of(job)
            found = (job.power_profile, steps, np.array([s.speed for s in steps]),
                     np.array([job_draw_w(job, s) for s in steps]) / J_PER_KWH)
            if len(self._steps) > 4096:
                self._steps.clear()
            self._steps[key] = found
        return found[1], found[2], found[3]

    def _run_plans(self, batch: list[tuple[JobRequest, tuple[str, ...]]], now: float, zc: ZoneCurves,
                   position: dict[str, int], present_margin: float = 0.0,
                   now_values: list[float] | None = None) -> list[JobPlan]:
        """The plans of jobs that run in one piece: one compiled search over every job, zone and cap.

        present_margin (g/kWh): starting now wins unless a later start emits less by more than this over the run.
        now_values: each row's intensity now (``zc.value_at(slice(None), now)``), when the caller has it.
        """
        tables = [self._cap_table(job) for job, _ in batch]
        n_jobs = len(batch)
        if n_jobs == 1:  # most rounds plan one job: its tables as they are, no padding to build
            _, sp, g = tables[0]
            speeds, g_per = sp.reshape(1, -1), g.reshape(1, -1)
            allowed = _allowed(tuple(position[z] for z in batch[0][1]), len(zc.curves))
        else:
            n_caps = max(len(t[0]) for t in tables)
            speeds = np.ones((n_jobs, n_caps))  # padding past a job's own caps is never read
            g_per = np.zeros((n_jobs, n_caps))
            allowed = np.zeros((n_jobs, len(zc.curves)), dtype=bool)
            for j, ((_, zones), (_, sp, g)) in enumerate(zip(batch, tables)):
                speeds[j, :len(sp)], g_per[j, :len(g)] = sp, g
                allowed[j, [position[z] for z in zones]] = True
        deadline_list = [_deadline(job, now) for job, _ in batch]
        deadlines = np.array(deadline_list)
        work_s = np.array([job.expected_duration_s for job, _ in batch])
        n_caps_of = np.array([len(t[0]) for t in tables])
        # caps come as floats (exact): indices into a job's steps once made ints
        now_vals, now_i, probe_g, best_vals, best_i, best_start_at = run_cost_table(
            zc.knots_s, zc.cumulative, zc.values, zc.integral_error, allowed, now, now + WAIT_PROBE_S, deadlines,
            work_s, speeds, g_per, n_caps_of).tolist()
        intensity = zc.value_at(slice(None), now).tolist() if now_values is None else now_values
        plans = []
        for j, (job, zones) in enumerate(batch):
            steps, deadline = tables[j][0], deadline_list[j]
            work = job.expected_duration_s
            rows = [position[z] for z in zones]
            now_j, now_i_j = now_vals[j], now_i[j]
            plan = JobPlan(must_start=now >= deadline - work - NOW_EPS_S, deadline_s=deadline,
                           latest_start_s=deadline - work, zones=zones, best_cost_g=float("inf"),
                           now_cost_g=dict(zip(zones, [(now_j[r], steps[int(now_i_j[r])]) for r in rows])),
                           now_intensity=dict(zip(zones, [intensity[r] for r in rows])))
            wait_cost = min([probe_g[j][r] for r in rows])
            # The cheapest zone; among equals (within 1e-12 g), the one whose cleanest moment is lowest, then
            # the listed order.
            costs = [best_vals[j][r] for r in rows]
            lowest = min(costs)
            tied = [k for k, c in enumerate(costs) if c <= lowest + 1e-12]
            if len(tied) > 1:
                floors = zc.lowest(np.array([rows[k] for k in tied]), now, deadline).tolist()
                tied = [tied[min(range(len(tied)), key=floors.__getitem__)]]
            if lowest < float("inf"):
                r = rows[tied[0]]
                plan.best_cost_g, plan.best_start_s = best_vals[j][r], best_start_at[j][r]
                plan.best_zone, plan.best_step = zones[tied[0]], steps[int(best_i[j][r])]
                if present_margin and plan.best_start_s > now + NOW_EPS_S:
                    k = min(range(len(rows)), key=lambda k: now_vals[j][rows[k]])
                    r = rows[k]
                    c = int(now_i[j][r])
                    kwh = float(g_per[j, c] * work_s[j] / speeds[j, c])  # g per (g/kWh x s), times s
                    if now_vals[j][r] - present_margin * kwh <= lowest:
                        plan.best_cost_g, plan.best_start_s = now_vals[j][r], now
                        plan.best_zone, plan.best_step = zones[k], steps[c]
            # carbon lost per GPU-hour by waiting an hour (inf: it cannot wait that long)
            plan.gain_per_gpu_h = (wait_cost - min([now_j[r] for r in rows])) / (job.gpus * WAIT_PROBE_S / 3600.0)
            plans.append(plan)
        return plans

    def _slot_plans(self, jobs: list[JobRequest], now: float, zones: tuple[str, ...], zc: ZoneCurves,
                    rows: tuple[int, ...], present_margin: float = 0.0,
                    now_values: list[float] | None = None) -> list[JobPlan]:
        """The plans of interruptible jobs allowed in the same zones: the cheapest pieces of time, all at once.
        now_values: each row's intensity now, when the caller has it."""
        tables = [self._cap_table(job) for job in jobs]
        if len(jobs) == 1:  # most rounds plan one job: its tables as they are, no padding to build
            _, speeds, g = tables[0]
            need_s, g_per = (jobs[0].expected_duration_s / speeds).reshape(1, -1), g.reshape(1, -1)
        else:
            n_caps = max(len(t[0]) for t in tables)
            need_s = np.full((len(jobs), n_caps), np.inf)  # a cap a job does not have needs forever
            g_per = np.ones((len(jobs), n_caps))
            for j, (job, (_, speeds, g)) in enumerate(zip(jobs, tables)):
                need_s[j, :len(speeds)], g_per[j, :len(g)] = job.expected_duration_s / speeds, g
        deadlines = [_deadline(job, now) for job in jobs]
        ends = np.array([max(d, now + job.expected_duration_s) for job, d in zip(jobs, deadlines)])
        found = slot_plans(zc, rows, now, ends, need_s, g_per, present_margin)
        if now_values is None:
            intensity = zc.value_at(list(rows), now).tolist()
        else:
            intensity = [now_values[r] for r in rows]
        plans = []
        cleanest_now = min(intensity)
        for job, deadline, (steps, _, _), (cap, cost, slots) in zip(jobs, deadlines, tables, found):
            work_s = job.expected_duration_s
            draw_w = job_draw_w(job)
            plan = JobPlan(must_start=now >= deadline - work_s - NOW_EPS_S, deadline_s=deadline,
                           latest_start_s=deadline - work_s, zones=zones, best_cost_g=float("inf"), slots=slots,
                           now_cost_g=dict(zip(zones, [(draw_w * value, FULL_POWER) for value in intensity])),
                           now_intensity=dict(zip(zones, intensity)))
            if cap >= 0:
                plan.best_cost_g, plan.best_step = cost, steps[cap]
            first = slots.first_run()  # else: not even full speed fits, and the plan runs flat out
            plan.best_start_s = first[0] if first else now
            plan.best_zone = zones[first[2]] if first else zones[0]
            marginal = slots.marginal() if first else 0.0
            plan.gain_per_gpu_h = (marginal - cleanest_now) * (job.power_w or 0.0) / 1000.0
            plans.append(plan)
        return plans


# Pure functions of their arguments, asked every round with the same few: memos (their results are only read).

@lru_cache(maxsize=256)
def _grid_zones(all_zones: tuple[str, ...], needed: frozenset[str]) -> tuple[str, ...]:
    """The zones the plans need, in the snapshot's order (then any others, sorted): the rows of the grid."""
    return tuple(z for z in all_zones if z in needed) + tuple(sorted(needed.difference(all_zones)))


@lru_cache(maxsize=256)
def _positions(grid_zones: tuple[str, ...]) -> dict[str, int]:
    """Each grid zone's row."""
    return {z: i for i, z in enumerate(grid_zones)}


@lru_cache(maxsize=256)
def _allowed(rows: tuple[int, ...], n_zones: int) -> np.ndarray:
    """One job's row of ``run_cost_table``'s ``allowed``: True in ``rows`` of ``n_zones``."""
    found = np.zeros((1, n_zones), dtype=bool)
    found[0, list(rows)] = True
    return found


def _deadline(job: JobRequest, now: float) -> float:
    """The deadline plans must meet; a job without one has no flexibility (it is due as if started now)."""
    if job.deadline_s is None:
        return now + (job.expected_duration_s or 0.0)
    return job.deadline_s


def plan_of(state: CycleState, job: JobRequest) -> JobPlan | None:
    return state.notes.get((PLANNER, job.job_id))
