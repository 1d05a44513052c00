"""The carbon cap (CapChooser): the power cap a job starts at and, for an interruptible job, when it stops again."""

from __future__ import annotations

from policies.carbon_search import NOW_EPS_S
from policies.framework import CycleState, job_draw_w, steps_of
from policies.plugins.carbon.planner import JobPlan, plan_of
from policies.plugins.holds import allowed_steps
from policies.plugins.pressure import pressure_of
from policies.snapshot import FULL_POWER, CapStep, JobRequest

# An interruptible job is suspended only if it keeps at least this much slack to resume in.
RESUME_MARGIN_S = 3600.0


class CarbonCap:
    """CapChooser: the plan's cap when it fits the power budget, else the cleanest one that fits and still
    meets the deadline; interruptible jobs stop when their planned stretch ends.

    min_stretch_s: an interruptible job runs at least this long before it is suspended again. Real jobs pay for
    every resume (a process start, a checkpoint load), which the plan does not see; the simulator's jobs do
    not, so its default is 0.
    resume_margin_s: a job is suspended only if it would keep at least this much slack (at full speed) after the
    stretch: it has to find room and power again to resume, which on a congested cluster takes time.
    """

    name = "CarbonCap"

    def __init__(self, min_stretch_s: float = 0.0, resume_margin_s: float = RESUME_MARGIN_S) -> None:
        for name, value in (("min_stretch_s", min_stretch_s), ("resume_margin_s", resume_margin_s)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.min_stretch_s = min_stretch_s
        self.resume_margin_s = resume_margin_s

    def choose(self, state: CycleState, job: JobRequest, zone: str) -> tuple[CapStep, float | None, str]:
        plan = plan_of(state, job)
        if plan is None:
            return FULL_POWER, None, f"started in zone {zone} (no carbon forecast)"
        now = state.now_s
        budget = float("inf") if state.budget_left_w is None else state.budget_left_w + 1e-9
        until_s = None
        if plan.slots is not None:
            step = plan.best_step
            first = plan.slots.first_run()
            if not plan.must_start and first is not None:
                until_s = max(first[1], now + self.min_stretch_s)
                left_s = (job.expected_duration_s or 0.0) - (until_s - now) * step.speed  # work after the stretch
                if until_s >= plan.deadline_s - NOW_EPS_S or plan.deadline_s - until_s - left_s < self.resume_margin_s \
                        or job.job_id in state.holds:
                    # too little slack to bet on finding room again, or a big job (it holds room) that would have to
                    # find a drained node again: run to the end
                    until_s = None
                elif not self._may_pause(state, job, plan, until_s, zone):
                    until_s = None  # the queue's demand would not fit before its deadlines: no pause
        else:
            step = plan.now_cost_g[zone][1]
        allowed = allowed_steps(state, job, zone)
        pressure = pressure_of(state)
        # a slow cap holds room longer; but under a power budget a fast one holds more power, which the queue's
        # replay (GPUs only) does not count, and there the due jobs may wait for power instead (on the congested
        # 3-zone year under a budget, full speed for pressed jobs missed a deadline that the plan's cap kept)
        pressed = pressure is not None and pressure.tight and step.speed < 1.0 and state.snapshot.power_budget_w is None
        if plan.must_start or pressed or job_draw_w(job, step) > budget or allowed is not None and step not in allowed:
            step = self._fallback(job, now, plan.deadline_s, budget, plan.must_start or pressed, allowed) or step
            until_s = None if plan.must_start else until_s
        why = "deadline: slack exhausted, " if plan.must_start else "carbon: "
        cap = "" if step.cap_fraction >= 1.0 else f" at a {step.cap_fraction:.0%} power cap"
        return step, until_s, (f"{why}started in zone {zone}{cap} "
                               f"({plan.now_intensity.get(zone, float('nan')):.0f} g/kWh now)")

    @staticmethod
    def _may_pause(state: CycleState, job: JobRequest, plan: JobPlan, until_s: float, zone: str) -> bool:
        """Whether the queue's demand still fits if ``job`` runs until ``until_s`` and waits for its next planned
        piece (``policies.plugins.pressure``); a pause that fits is booked for the rest of the cycle."""
        pressure = pressure_of(state)
        if pressure is None:
            return True
        slots = plan.slots
        later = [float(k) for k, a in zip(slots.knots_s[:-1], slots.allotted_s) if a > 0 and k > until_s]
        resume_s = min(later, default=plan.deadline_s)
        return pressure.defer(job, resume_s, run_until_s=until_s, zone=zone)

    @staticmethod
    def _fallback(job: JobRequest, now: float, deadline: float, budget: float, must_start: bool,
                  allowed: tuple[CapStep, ...] | None = None) -> CapStep | None:
        """Within the budget (and among ``allowed``, the caps that keep other jobs' holds): the least-drawing cap
        that meets the deadline from now (full speed when the slack is gone), else the fastest cap (late either
        way); None when no cap fits the budget."""
        work_s = job.expected_duration_s or 0.0
        within = [s for s in allowed or steps_of(job) if job_draw_w(job, s) <= budget]
        fitting = [s for s in within if now + work_s / s.speed <= deadline]
        if must_start:
            fitting = [s for s in fitting if s.speed >= 1.0] or fitting
        if fitting:
            return min(fitting, key=lambda s: s.power_fraction / s.speed)
        return max(within, key=lambda s: s.speed, default=None)
