"""The independent checker against hand-built results: a good one passes, each broken invariant is caught."""

import copy

import numpy as np
import pytest

from policies.snapshot import CapStep, PowerProfile
from scheduler.simulation.checker import check_result
from scheduler.simulation.inputs import Cluster, Job, Zone

# DE: 100 g/kWh until t=3600, then 300. FR: 50 flat. Budget 1000 W.
CLUSTER = Cluster(0.0, (Zone("DE", 2, np.array([0.0, 3600.0]), np.array([100.0, 300.0])),
                        Zone("FR", 1, np.array([0.0]), np.array([50.0]))), budget_w=1000.0)
PROFILES = {"p": PowerProfile("p", (CapStep(1.0, 1.0, 1.0), CapStep(0.5, 0.5, 0.4)))}
JOBS = [Job("a", 0.0, 3600.0, 2, 250.0, 7200.0, False, ("DE",), "", "", 2),
        Job("b", 0.0, 1800.0, 1, 400.0, 9000.0, True, (), "p", "", 3)]


def good_result():
    # a: DE 0-3600, 500 W -> 0.5 kWh at 100 = 0.05 kg.
    # b: FR 0-1800 at cap 0.5 (speed .5: 900 s of work, 160 W) then DE 3600-4500 at full power (900 s, 400 W).
    b_kwh = 160 * 1800 / 3.6e6 + 400 * 900 / 3.6e6
    b_kg = (160 * 1800 * 50 + 400 * 900 * 300) / 3.6e6 / 1000
    return {"policy": "x", "forecast": "perfect", "seed": 0,
            "summary": {"jobs": 2, "completed": 2, "deadline_misses": 0, "energy_kwh": 0.5 + b_kwh,
                        "emissions_kg": 0.05 + b_kg, "mean_wait_s": 0.0, "wall_s": 0.0},
            "jobs": [{"job_id": "a", "completed_s": 3600.0, "energy_kwh": 0.5, "emissions_kg": 0.05,
                      "segments": [{"start_s": 0.0, "end_s": 3600.0, "zone": "DE", "cap_fraction": 1.0}]},
                     {"job_id": "b", "completed_s": 4500.0, "energy_kwh": b_kwh, "emissions_kg": b_kg,
                      "segments": [{"start_s": 0.0, "end_s": 1800.0, "zone": "FR", "cap_fraction": 0.5},
                                   {"start_s": 3600.0, "end_s": 4500.0, "zone": "DE", "cap_fraction": 1.0}]}]}


def test_a_good_result_passes():
    assert check_result(good_result(), CLUSTER, JOBS, PROFILES) == []


def _seg(result, job, k):
    return next(e for e in result["jobs"] if e["job_id"] == job)["segments"][k]


def _set(job, k, **changes):
    def mutate(result):
        _seg(result, job, k).update(changes)
    return mutate


def _entry(job, **changes):
    def mutate(result):
        next(e for e in result["jobs"] if e["job_id"] == job).update(changes)
    return mutate


def _summary(**changes):
    def mutate(result):
        result["summary"].update(changes)
    return mutate


def _split_a(result):
    entry = result["jobs"][0]
    entry["segments"] = [{"start_s": 0.0, "end_s": 1800.0, "zone": "DE", "cap_fraction": 1.0},
                         {"start_s": 1800.0, "end_s": 3600.0, "zone": "DE", "cap_fraction": 1.0}]


def _drop_job(result):
    result["jobs"].pop()


@pytest.mark.parametrize("name,mutate,words", [
    ("starts before submission", _set("a", 0, start_s=-10.0, end_s=3590.0), "before submission"),
    ("not allowed zone", _set("a", 0, zone="FR"), "not allowed"),
    ("cap not in profile", _set("b", 0, cap_fraction=0.7), "not in its profile"),
    ("too little work", _set("b", 1, end_s=4000.0), "work done"),
    ("overlapping segments", _set("b", 1, start_s=1000.0, end_s=1900.0), "overlap"),
    ("non-interruptible split", _split_a, "not interruptible"),
    ("zone over capacity", _set("b", 1, start_s=0.0, end_s=900.0), "more than its 2"),
    ("power budget", _set("b", 1, start_s=1000.0, end_s=1900.0), "budget"),
    ("energy misreported", _entry("a", energy_kwh=0.4), "energy_kwh"),
    ("emissions misreported", _entry("b", emissions_kg=1.0), "emissions_kg"),
    ("completion is not the last end", _entry("a", completed_s=3000.0), "completed_s"),
    ("misses miscounted", _summary(deadline_misses=1), "deadline_misses"),
    ("total emissions", _summary(emissions_kg=9.0), "summary.emissions_kg"),
    ("a job missing", _drop_job, "one for one"),
])
def test_each_broken_invariant_is_caught(name, mutate, words):
    result = copy.deepcopy(good_result())
    mutate(result)
    problems = check_result(result, CLUSTER, JOBS, PROFILES)
    assert any(words in p for p in problems), (name, problems)


def test_a_late_job_counts_as_a_miss():
    jobs = [JOBS[0].__class__(**{**JOBS[0].__dict__, "deadline_s": 3000.0}), JOBS[1]]
    problems = check_result(good_result(), CLUSTER, jobs, PROFILES)
    assert problems == ["summary.deadline_misses is 0, the segments say 1"]
