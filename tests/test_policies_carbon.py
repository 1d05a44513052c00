"""carbon-aware as tables of cases that need no cluster: a snapshot and a forecast in, decisions out."""

import numpy as np
import pytest

from policies.decisions import Start, Wait
from policies.forecast import ForecastBase
from policies.builtin import create_policy
from policies.snapshot import CapStep, JobRequest, PowerProfile, Snapshot, ZonePool

H = 3600.0


class TableForecast(ForecastBase):
    """A forecast from hourly values per zone; it is what the policy sees, history and future alike."""

    history_only = False

    def __init__(self, now_s, hourly):
        self.now_s = now_s
        self.hourly = {z: np.asarray(v, dtype=float) for z, v in hourly.items()}

    def _values(self, zone, start_s, end_s):
        edges = np.arange(np.floor(start_s / H) * H, end_s, H)
        times = np.maximum(edges, start_s)
        return times, self.hourly[zone][np.minimum((edges // H).astype(int), len(self.hourly[zone]) - 1)]

    def intensity(self, zone, t_s):
        assert t_s <= self.now_s
        return float(self._values(zone, t_s, t_s + 1)[1][0])

    def history(self, zone, start_s, end_s):
        return self._values(zone, start_s, min(end_s, self.now_s))

    def forecast(self, zone, start_s, end_s):
        return self._values(zone, start_s, end_s)


DIRTY_THEN_CLEAN = {"DE": [400, 400, 100, 100, 400, 400, 400, 400], "FR": [300] * 8}
SLOW = PowerProfile("slow", (CapStep(1.0, 1.0, 1.0), CapStep(0.5, 0.8, 0.5)))


def job(job_id="j", gpus=1, duration_h=1.0, deadline_h=8.0, zones=("DE",), interruptible=False, profile=None,
        submitted_s=0.0, power_w=300.0):
    return JobRequest(job_id=job_id, gpus=gpus, submitted_s=submitted_s, zones=zones,
                      deadline_s=None if deadline_h is None else deadline_h * H, interruptible=interruptible,
                      expected_duration_s=duration_h * H, power_w=power_w, power_profile=profile)


def decide(jobs, now_s=0.0, free=None, hourly=DIRTY_THEN_CLEAN, budget_w=None, draw_w=0.0):
    free = free or {"DE": 4, "FR": 4}
    pools = tuple(ZonePool(z, 4, f) for z, f in free.items())
    snapshot = Snapshot(now_s=now_s, waiting=tuple(jobs), gpus=(), pools=pools,
                        forecast=TableForecast(now_s, hourly), power_budget_w=budget_w, power_draw_w=draw_w)
    return {d.job_id: d for d in create_policy("carbon-aware").decide(snapshot)}


@pytest.mark.parametrize("name,jobs,kwargs,expected", [
    ("defer to the clean window", [job()], {}, ("wait", 2 * H)),
    ("clean now: start", [job()], {"now_s": 2 * H}, ("start", "DE")),
    ("no deadline: no flexibility", [job(deadline_h=None)], {}, ("start", "DE")),
    ("slack exhausted: must start", [job(duration_h=2, deadline_h=2)], {}, ("start", "DE")),
    ("window too short for the clean hours", [job(duration_h=2, deadline_h=2.5)], {}, ("wait", 0.5 * H)),
    ("space: the cleaner zone now", [job(zones=("DE", "FR"), deadline_h=None)], {}, ("start", "FR")),
    ("space and time: clean DE later beats FR now", [job(zones=("DE", "FR"))], {}, ("wait", 2 * H)),
    ("full zone, clean now elsewhere", [job(zones=("DE", "FR"), deadline_h=None)], {"free": {"DE": 4, "FR": 0}},
     ("start", "DE")),
    ("no room anywhere", [job()], {"free": {"DE": 0, "FR": 0}, "now_s": 2 * H}, ("blocked", None)),
])
def test_time_and_space(name, jobs, kwargs, expected):
    d = decide(jobs, **kwargs)["j"]
    what, detail = expected
    if what == "start":
        assert isinstance(d, Start) and d.zone == detail and d.until_s is None, (name, d)
    elif what == "wait":
        assert isinstance(d, Wait) and d.deferred and d.retry_at_s == pytest.approx(detail), (name, d)
        assert d.reason.startswith("carbon: waiting"), d.reason
    else:
        assert isinstance(d, Wait) and not d.deferred and "waiting for a free GPU" in d.reason, (name, d)


def test_a_full_clean_zone_is_waited_for_only_while_the_slack_keeps_a_margin():
    clean_fr = {"DE": [400] * 30, "FR": [100] * 30}
    # 1 h of work due in 8 h: latest start at 7 h; FR (clean) is full, DE has room
    waiting = decide([job(zones=("FR", "DE"))], free={"DE": 4, "FR": 0}, hourly=clean_fr)["j"]
    assert isinstance(waiting, Wait) and not waiting.deferred and waiting.reason == "waiting for room in zone FR"
    assert waiting.room_in == ("FR",)  # room freeing in DE changes nothing for it
    assert waiting.retry_at_s == pytest.approx(5 * H)  # the latest start less the two-hour margin
    late = decide([job(zones=("FR", "DE"))], free={"DE": 4, "FR": 0}, hourly=clean_fr, now_s=5 * H)["j"]
    assert isinstance(late, Start) and late.zone == "DE"  # no more betting on room in FR
    snapshot = Snapshot(now_s=5 * H, waiting=(job(zones=("FR", "DE")),), gpus=(),
                        pools=(ZonePool("DE", 4, 4), ZonePool("FR", 4, 0)), forecast=TableForecast(5 * H, clean_fr))
    bold = create_policy("carbon-aware", room_margin_s=0.0).decide(snapshot)[0]
    assert isinstance(bold, Wait) and bold.retry_at_s == pytest.approx(7 * H)  # no margin: to the latest start
    with pytest.raises(ValueError, match="room_margin_s"):
        create_policy("carbon-aware", room_margin_s=-1.0)


def test_a_wait_on_a_forecast_learned_from_history_is_looked_at_again_halfway():
    clean_at_6 = {"DE": [400] * 6 + [100] * 2 + [400] * 20}

    def deferral(history_only, learned=(), now_s=0.0):
        forecast = TableForecast(now_s, clean_at_6)
        forecast.history_only = history_only
        forecast.learned = lambda zone: zone in learned
        snapshot = Snapshot(now_s=now_s, waiting=(job(deadline_h=10),), gpus=(), pools=(ZonePool("DE", 4, 4),),
                            forecast=forecast)
        (decision,) = create_policy("carbon-aware", history_model=False).decide(snapshot)
        assert isinstance(decision, Wait) and decision.deferred and "waiting" in decision.reason
        return decision.retry_at_s

    assert deferral(False) == pytest.approx(6 * H)  # an exact forecast: the best start stands
    assert deferral(True) == pytest.approx(3 * H)  # one that may improve as the hour nears: halfway
    # the daemon's forecast of a zone without a provider forecast is learned from its history, zone by zone
    assert deferral(False, learned=("DE",)) == pytest.approx(3 * H)
    assert deferral(False, learned=("FR",)) == pytest.approx(6 * H)
    # halfway is on the forecast's 30-minute issue grid (the next boundary), where the jobs deferred meanwhile
    # are looked at again together: from 0:10, at least three hours on is 3:10, so 3:30
    assert deferral(True, now_s=H / 6) == pytest.approx(3.5 * H)
    assert deferral(False, now_s=H / 6) == pytest.approx(6 * H)  # the best start itself stays where it is


def test_a_zone_whose_forecast_is_learned_wants_the_present_margin():
    # a later start forecast a hair cleaner (0.2 g/kWh) than now: taken at its word from a provider, a guess beside
    # the measured present where the daemon learned it from the zone's history
    def decision(learned):
        forecast = TableForecast(0.0, {"DE": [300.0, 299.8, 299.8, 300.0] + [300.0] * 10})
        forecast.learned = lambda zone: zone in learned
        snapshot = Snapshot(now_s=0.0, waiting=(job(duration_h=1, deadline_h=6),), gpus=(),
                            pools=(ZonePool("DE", 4, 4),), forecast=forecast)
        return create_policy("carbon-aware").decide(snapshot)[0]

    assert isinstance(decision(()), Wait)
    assert isinstance(decision(("DE",)), Start)


@pytest.mark.parametrize("interruptible", [False, True])
def test_on_a_learned_forecast_a_gain_below_the_data_resolution_is_not_waited_for(interruptible):
    """A zone that barely moves (27-27.3 g/kWh for 50 days): the model predicts a hair below a measured present,
    which used to defer a job half an hour at a time until its slack was gone."""
    now_h = 50 * 24
    hourly = [27.0 + 0.3 * ((i * 7) % 5) / 4 for i in range(60 * 24)]

    def decision(present, **config):
        forecast = TableForecast(now_h * H, {"NO": hourly[:now_h] + [present] + hourly[now_h + 1:]})
        forecast.history_only = True
        snapshot = Snapshot(now_s=now_h * H, waiting=(job(duration_h=3, deadline_h=now_h + 20, zones=("NO",),
                                                          interruptible=interruptible),),
                            gpus=(), pools=(ZonePool("NO", 4, 4),), forecast=forecast)
        return create_policy("carbon-aware", **config).decide(snapshot)[0]

    assert isinstance(decision(27.6), Start)
    hair = decision(27.6, present_margin_g_per_kwh=0.0)
    assert isinstance(hair, Wait) and hair.deferred
    dirty_now = decision(35.0)  # a present well above every prediction: worth waiting for
    assert isinstance(dirty_now, Wait) and dirty_now.deferred
    with pytest.raises(ValueError, match="present_margin_g_per_kwh"):
        create_policy("carbon-aware", present_margin_g_per_kwh=-1.0)


def test_interruptible_runs_in_the_clean_hours_only():
    # 3 h of work within 8 h; clean hours 2-4 (2 h): the third hour is the cheapest dirty one (400, the first)
    first = decide([job(duration_h=3, interruptible=True)])["j"]
    assert isinstance(first, Start) and first.until_s == pytest.approx(H)  # now (400) is as cheap as any other
    later = decide([job(duration_h=2, interruptible=True)], now_s=H)["j"]
    assert isinstance(later, Wait) and later.deferred and later.retry_at_s == pytest.approx(2 * H)
    running = decide([job(duration_h=2, interruptible=True)], now_s=2 * H)["j"]
    assert isinstance(running, Start) and running.until_s == pytest.approx(4 * H)


def test_a_minimum_stretch_keeps_resumes_from_being_wasted():
    # the plan's first stretch is one hour; with a 90-minute minimum it runs 90 minutes before a suspension
    snapshot = Snapshot(now_s=0.0, waiting=(job(duration_h=3, interruptible=True),), gpus=(),
                        pools=(ZonePool("DE", 4, 4), ZonePool("FR", 4, 4)),
                        forecast=TableForecast(0.0, DIRTY_THEN_CLEAN))
    first = create_policy("carbon-aware", min_stretch_s=1.5 * H).decide(snapshot)[0]
    assert isinstance(first, Start) and first.until_s == pytest.approx(1.5 * H)
    # a minimum reaching past the deadline means no suspension at all
    whole = create_policy("carbon-aware", min_stretch_s=8 * H).decide(snapshot)[0]
    assert isinstance(whole, Start) and whole.until_s is None


def test_an_interruptible_job_is_suspended_only_with_an_hour_of_slack_left_to_resume_in():
    # 3 h of work by 3.9 h: the clean hours 2-3.9 and 1.1 h of dirty ones first; after that stretch only
    # 3.9 - 1.1 - 1.9 = 0.9 h of slack would be left, so it runs straight through
    snapshot = Snapshot(now_s=0.0, waiting=(job(duration_h=3, deadline_h=3.9, interruptible=True),), gpus=(),
                        pools=(ZonePool("DE", 4, 4), ZonePool("FR", 4, 4)),
                        forecast=TableForecast(0.0, DIRTY_THEN_CLEAN))
    straight = create_policy("carbon-aware").decide(snapshot)[0]
    assert isinstance(straight, Start) and straight.until_s is None
    bold = create_policy("carbon-aware", resume_margin_s=0.0).decide(snapshot)[0]
    assert isinstance(bold, Start) and bold.until_s == pytest.approx(1.1 * H)
    with pytest.raises(ValueError, match="resume_margin_s"):
        create_policy("carbon-aware", resume_margin_s=-1.0)


def test_priority_decides_who_gets_scarce_room_unless_a_deadline_is_at_stake():
    urgent = JobRequest(job_id="vip", gpus=1, submitted_s=0.0, zones=("FR",), priority=5,
                        expected_duration_s=H, power_w=300.0)
    plain = JobRequest(job_id="plain", gpus=1, submitted_s=0.0, zones=("FR",), expected_duration_s=H, power_w=300.0)
    d = decide([plain, urgent], free={"DE": 0, "FR": 1}, hourly={"DE": [400] * 8, "FR": [300] * 8})
    assert isinstance(d["vip"], Start) and isinstance(d["plain"], Wait)
    due = JobRequest(job_id="due", gpus=1, submitted_s=0.0, zones=("FR",), deadline_s=H,
                     expected_duration_s=H, power_w=300.0)
    # a job without a deadline is due as if started now: a 2-hour one is less pressing than a deadline in 1 hour
    long_vip = JobRequest(job_id="vip", gpus=1, submitted_s=0.0, zones=("FR",), priority=5,
                          expected_duration_s=2 * H, power_w=300.0)
    d = decide([long_vip, due], free={"DE": 0, "FR": 1}, hourly={"DE": [400] * 8, "FR": [300] * 8})
    assert isinstance(d["due"], Start) and isinstance(d["vip"], Wait)


def test_waits_read_in_units_people_use():
    from policies.plugins.carbon.window import _span

    assert [_span(s) for s in (45, 600, 7200)] == ["45 s", "10 min", "2.0 h"]


def test_power_cap_when_it_lowers_emissions_and_keeps_the_deadline():
    flat = {"DE": [300] * 8}
    loose = decide([job(profile=SLOW, deadline_h=None, duration_h=1)], hourly=flat)["j"]
    assert loose.cap_fraction == 1.0  # no slack: the slower cap would miss the deadline
    capped = decide([job(profile=SLOW, deadline_h=3)], hourly=flat)["j"]
    assert isinstance(capped, Start) and capped.cap_fraction == 0.5  # 1.25 h at half power beats 1 h at full


def test_power_budget_caps_or_holds():
    flat = {"DE": [300] * 8}
    under_budget = decide([job(gpus=2, deadline_h=None)], hourly=flat, budget_w=1000, draw_w=500)["j"]
    assert isinstance(under_budget, Wait) and "power" in under_budget.reason and not under_budget.deferred
    capped = decide([job(gpus=2, profile=SLOW, deadline_h=3)], hourly=flat, budget_w=1000, draw_w=600)["j"]
    assert isinstance(capped, Start) and capped.cap_fraction == 0.5


def test_a_job_with_slack_waits_for_power_rather_than_start_at_a_cap_too_slow_for_its_deadline():
    flat = {"DE": [300] * 8}
    # 400 W left: only the half-power cap (300 W) fits, and it needs 1.25 h of the 1.1 h the job has
    tight = decide([job(gpus=2, profile=SLOW, deadline_h=1.1)], hourly=flat, budget_w=1000, draw_w=600)["j"]
    assert isinstance(tight, Wait) and "would miss its deadline" in tight.reason and not tight.deferred
    assert tight.retry_at_s == pytest.approx(0.1 * H)  # when it falls due, and may preempt
    due = decide([job(gpus=2, profile=SLOW, deadline_h=1.1)], hourly=flat, budget_w=1000, draw_w=600,
                 now_s=0.1 * H)["j"]
    assert isinstance(due, Start) and due.cap_fraction == 0.5  # due: as fast as the budget allows


def test_a_job_due_now_without_power_for_full_speed_runs_as_fast_as_the_budget_allows():
    flat = {"DE": [300] * 8}
    slowest = PowerProfile("three", (CapStep(1.0, 1.0, 1.0), CapStep(0.7, 0.9, 0.7), CapStep(0.4, 0.7, 0.4)))
    # due now (1 h of work, deadline in 1 h): only full speed is on time, but 600 W of budget is left of 1000
    due = decide([job(gpus=3, profile=slowest, deadline_h=1)], hourly=flat, budget_w=1000, draw_w=400)["j"]
    assert isinstance(due, Start) and due.cap_fraction == 0.4  # 360 W fits, 630 W (the 0.7 cap) does not
    held = decide([job(gpus=3, profile=slowest, deadline_h=1)], hourly=flat, budget_w=1000, draw_w=700)["j"]
    assert isinstance(held, Wait) and "power" in held.reason  # not even the lowest cap fits: never over budget


def test_contention_urgent_first_then_most_carbon_lost_by_waiting():
    jobs = [job("relaxed", zones=("DE",), deadline_h=8, submitted_s=-10),
            job("urgent", zones=("DE",), duration_h=2, deadline_h=2)]
    d = decide(jobs, free={"DE": 1, "FR": 0}, now_s=0.0)
    assert isinstance(d["urgent"], Start) and isinstance(d["relaxed"], Wait)
    # both want the one clean GPU now; the one that loses more by waiting an hour gets it
    clean_now = {"DE": [100, 400, 400, 400, 400, 400, 400, 400], "FR": [300] * 8}
    jobs = [job("short", duration_h=1, deadline_h=8, submitted_s=-10), job("long", duration_h=3, deadline_h=8)]
    d = decide(jobs, free={"DE": 1, "FR": 0}, hourly=clean_now)
    assert isinstance(d["short"], Start) and isinstance(d["long"], Wait)


def test_without_a_forecast_it_behaves_like_fifo():
    snapshot = Snapshot(0.0, (job(zones=("DE", "FR")),), gpus=(), pools=(ZonePool("DE", 2, 2), ZonePool("FR", 2, 2)),
                        intensity_g_per_kwh={"DE": 400.0, "FR": 50.0})
    d = create_policy("carbon-aware").decide(snapshot)[0]
    assert isinstance(d, Start) and d.zone == "FR"  # the cleaner zone now, by the current intensity


def test_a_due_job_suspends_running_interruptible_jobs_that_can_afford_it():
    from policies.decisions import Suspend
    from policies.snapshot import RunningJob

    flat = {"DE": [300] * 30}
    due = job("due", gpus=2, deadline_h=1)  # 1 h of work, due in 1 h: it must start now

    def running(job_id, gpus=1, interruptible=True, deadline_h=20.0, remaining_h=2.0):
        return RunningJob(job_id, "DE", "DE", gpus, gpus * 300.0, interruptible, deadline_h * H, remaining_h * H)

    def decide_with(jobs, others, free, budget_w=None, draw_w=0.0):
        snapshot = Snapshot(now_s=0.0, waiting=tuple(jobs), gpus=(), pools=(ZonePool("DE", 4, free),),
                            forecast=TableForecast(0.0, flat), power_budget_w=budget_w, power_draw_w=draw_w,
                            running=tuple(others))
        return create_policy("carbon-aware").decide(snapshot)

    # room: one GPU free, two needed; of the paused-able, the one with most slack goes, and before the start
    others = [running("tight", deadline_h=3.5), running("loose", deadline_h=20), running("fixed", interruptible=False)]
    decisions = decide_with([due], others, free=1)
    assert [type(d).__name__ for d in decisions] == ["Suspend", "Start"] and decisions[0].job_id == "loose"
    assert "due" in decisions[0].reason and decisions[1].reason.startswith("deadline: slack exhausted")  # planned
    # "tight" has 1.5 h of slack (>= the due job's hour) and "loose" 18 h: power for 600 W takes both, most slack first
    decisions = decide_with([due], others, free=4, budget_w=900.0, draw_w=900.0)
    assert [d.job_id for d in decisions if isinstance(d, Suspend)] == ["loose", "tight"]
    assert isinstance(decisions[-1], Start) and decisions[-1].cap_fraction == 1.0
    # not enough can be paused: nothing is suspended, the job waits
    decisions = decide_with([due], [running("tight", deadline_h=1.5), others[2]], free=1)
    assert [type(d).__name__ for d in decisions] == ["Wait"]
    # a job with slack left is never a reason to suspend anyone
    decisions = decide_with([job("relaxed", gpus=2, deadline_h=10)], others, free=1)
    assert not any(isinstance(d, Suspend) for d in decisions)
