"""The plugin framework: registry, statuses, score normalisation, room bookkeeping, the history model."""

import numpy as np
import pytest

from plain_plans import SlotGrid, best_starts
from policies.decisions import Start, Wait
from policies.errors import DuplicatePlugin, UnknownPlugin
from policies.forecast import IntensityCurve
from policies.framework import ClusterView, normalize_lower_is_better
from policies.history_forecast import HistoryForecast
from policies.plugins import assemble, plugin_registry
from policies.builtin import create_policy
from policies.snapshot import CapStep, GpuSlot, JobRequest, PowerProfile, Snapshot, ZonePool
from policies.status import Code, Status


def test_plugins_are_registered_by_name():
    registry = plugin_registry()
    assert {"NodeCapacity", "PowerBudget", "CarbonPlanner", "CarbonWindow", "CarbonCap"} <= set(registry.names())
    with pytest.raises(DuplicatePlugin):
        registry.register("NodeCapacity", object)
    with pytest.raises(UnknownPlugin, match="valid plugins: ArrivalOrder"):
        assemble("x", queue_sort="Random", cap_chooser="FullPower")


def test_a_profile_is_configurable_from_names():
    profile = assemble("fifo-de", queue_sort="ArrivalOrder", filters=("NodeCapacity",), cap_chooser="FullPower",
                       config={"FullPower": {"label": "custom"}})
    assert [f.name for f in profile.filters] == ["NodeCapacity"] and profile.cap_chooser.label == "custom"


@pytest.mark.parametrize("raw,expected", [
    ({}, {}),
    ({"A": 5.0, "B": 5.0}, {"A": 100.0, "B": 100.0}),
    ({"A": 100.0, "B": 300.0, "C": 200.0}, {"A": 100.0, "B": 0.0, "C": 50.0}),
])
def test_lower_is_better_normalisation(raw, expected):
    assert normalize_lower_is_better(raw) == expected


def test_status_codes_say_not_now_and_never():
    assert Status(Code.SUCCESS).ok and not Status(Code.UNRESOLVABLE, "NodeCapacity", "no node").ok
    assert Code.UNRESOLVABLE.value == "UnschedulableAndUnresolvable"


def test_cluster_view_counts_listed_gpus_and_pools():
    snapshot = Snapshot(0.0, (), gpus=(GpuSlot("g0", "n1", "DE"), GpuSlot("g1", "n1", "DE", busy=True)),
                        pools=(ZonePool("FR", 8, 3),))
    view = ClusterView(snapshot)
    assert view.fits("DE", 1) and not view.fits("DE", 2) and view.largest_node == {"DE": 2, "FR": 8}
    assert view.take("DE", 1) == (("n1", ("g0",)),) and view.take("FR", 2) == (("FR", ()),)
    assert view.free_gpus("FR") == 1


def test_cluster_views_sharing_a_layout_count_each_snapshot_own_free_gpus():
    layouts: dict = {}
    busy = ClusterView(Snapshot(0.0, (), gpus=(), pools=(ZonePool("DE", 8, 1), ZonePool("FR", 4, 4, ("FR/0", "FR/1"),
                                                                                         (2, 2)))), layouts)
    assert busy.possible_zones(("DE", "FR"), 4) == ("DE", "FR") and busy.possible_zones(("DE", "FR"), 8) == ("DE",)
    assert not busy.fits("DE", 2) and busy.free_gpus("DE") == 1 and busy.free_gpus("FR") == 4
    idle = ClusterView(Snapshot(1.0, (), gpus=(), pools=(ZonePool("DE", 8, 8), ZonePool("FR", 4, 1, ("FR/0", "FR/1"),
                                                                                         (1, 0)))), layouts)
    assert len(layouts) == 1 and idle.node_sizes is busy.node_sizes  # the layout is worked out once
    assert idle.fits("DE", 8) and idle.free_gpus("DE") == 8 and idle.free_gpus("FR") == 1
    idle.take("DE", 3)
    assert idle.free_gpus("DE") == 5 and busy.free_gpus("DE") == 1
    assert idle.possible_zones(("FR", "DE"), 4) == ("FR", "DE") and idle.possible_zones(("FR", "DE"), 3) == ("DE",)


def test_fifo_on_pools_and_the_power_budget():
    jobs = (JobRequest("a", 2, 0.0, power_w=300.0), JobRequest("b", 1, 1.0, power_w=300.0))
    snapshot = Snapshot(0.0, jobs, gpus=(), pools=(ZonePool("DE", 4, 4),), power_budget_w=800.0)
    a, b = create_policy("fifo").decide(snapshot)
    assert isinstance(a, Start) and a.node_id == "DE" and a.gpu_ids == ()
    assert isinstance(b, Wait) and b.reason.startswith("waiting for power")


def test_fifo_never_starts_a_job_over_the_budget_that_only_its_lowest_cap_fits():
    slow = PowerProfile("slow", (CapStep(1.0, 1.0, 1.0), CapStep(0.5, 0.8, 0.5)))
    job = JobRequest("a", 2, 0.0, power_w=300.0, power_profile=slow)  # 600 W at full power, 300 W at the cap
    snapshot = Snapshot(0.0, (job,), gpus=(), pools=(ZonePool("DE", 4, 4),), power_budget_w=1000.0,
                        power_draw_w=500.0)
    (decision,) = create_policy("fifo").decide(snapshot)  # fifo runs at full power: 600 W > 500 W left
    assert isinstance(decision, Wait) and decision.reason.startswith("waiting for power") and "600 W" in decision.reason


def test_best_start_and_cheapest_slots_are_exact():
    curve = IntensityCurve(np.array([0.0, 10.0, 20.0, 30.0]), np.array([5.0, 1.0, 3.0, 1.0]), 40.0)
    starts, integrals = best_starts(curve, 0.0, np.array([30.0, 25.0]), np.array([10.0, 15.0]))
    assert starts.tolist() == [10.0, 10.0] and integrals.tolist() == [10.0, 25.0]  # ties with a start at 25 (5 x 3 + 10 x 1): the earliest
    plan = SlotGrid([curve], 0.0, 40.0).plan(15.0)
    assert plan.integral == 15.0 and plan.first_run() == (10.0, 20.0, 0)


def test_history_model_beats_same_time_yesterday_on_a_weekly_grid():
    """A weekday/weekend signal with noise: the fitted blend forecasts a day ahead better than persistence."""
    day, step = 86400.0, 1800.0
    t = np.arange(0.0, 42 * day, step)
    rng = np.random.default_rng(1)
    weekend = ((t // day) % 7 >= 5) * -120.0
    values = 300 + 80 * np.sin(2 * np.pi * t / day) + weekend + rng.normal(0, 25, len(t))

    class Source:
        history_only = True
        now_s = 0.0

        def history(self, zone, start_s, end_s):
            i, j = np.searchsorted(t, start_s, "right") - 1, np.searchsorted(t, min(end_s, self.now_s), "right")
            i = max(i, 0)
            return np.concatenate(([start_s], t[i + 1:j])), values[i:j]

        def intensity(self, zone, t_s):
            return float(values[np.searchsorted(t, t_s, "right") - 1])

    source = Source()
    model = HistoryForecast(source)
    errors_model, errors_persistence = [], []
    for now in np.arange(28 * day, 41 * day, day / 4):
        source.now_s = model.now_s = now
        curve = model.curve("Z", now + day)
        times, predicted = model.forecast("Z", now, now + day)
        assert times[0] == now and np.array_equal(predicted, curve.value_at(times))
        future = t[(t > now) & (t < now + day)]
        truth = values[np.searchsorted(t, future)]
        errors_model.append(np.abs(curve.value_at(future + 1) - truth).mean())
        errors_persistence.append(np.abs(values[np.searchsorted(t, future - day)] - truth).mean())
    assert np.mean(errors_model) < 0.8 * np.mean(errors_persistence)


def test_a_job_waiting_for_room_names_only_the_zones_that_could_ever_take_it():
    """DE's pool has 8 GPUs, FR's only 4: an 8-GPU job waits for room in DE alone, so room freeing in FR need
    not wake it (the simulator offers it again only when room frees where it waits)."""
    job = JobRequest("big", 8, 0.0, zones=("DE", "FR"), power_w=300.0)
    snapshot = Snapshot(0.0, (job,), gpus=(), pools=(ZonePool("DE", 8, 2), ZonePool("FR", 4, 4)))
    (decision,) = create_policy("fifo").decide(snapshot)
    assert isinstance(decision, Wait) and not decision.deferred
    assert decision.reason == "waiting for 8 free GPUs on one node in zones DE, FR" and decision.room_in == ("DE",)
