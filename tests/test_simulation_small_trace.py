"""A small checked-in trace (tests/data/sim_small) with answers worked out by hand and by brute force."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policies.builtin import create_policy
from scheduler.simulation.checker import check_result
from scheduler.simulation.cli import main as simulate_main
from scheduler.simulation.driver import simulate
from scheduler.simulation.inputs import load_cluster, load_jobs, load_profiles

DATA = Path(__file__).parent / "data" / "sim_small"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs():
    cluster = load_cluster(DATA / "cluster.toml")
    profiles = load_profiles(DATA / "profiles.csv")
    return cluster, load_jobs(DATA / "jobs.csv", cluster, profiles), profiles


# Zone A: 400 g/kWh at 00h, 100 at 01-04h, 400 at 05-11h, 390 at 12-23h (each day); zone B: 250 flat.
# job -> (segments, emissions kg) as worked out by hand (see each comment).
CARBON_AWARE = {
    "flex": ([(3600.0, 7200.0, "A", 1.0)], 0.3 * 100 / 1000),  # the first clean hour
    "rigid": ([(7200.0, 9000.0, "A", 1.0)], 0.15 * 100 / 1000),  # no deadline: at submission
    "spread": ([(3600.0, 14400.0, "A", 1.0)], 0.9 * 100 / 1000),  # three of the four clean hours
    "capped": ([(36000.0, 40500.0, "B", 0.5)], 0.3125 * 250 / 1000),  # B beats A's 390-400; half cap: 0.4 x 0.8^-1
    "late": ([(14400.0, 21600.0, "B", 1.0)], 0.4 * 250 / 1000),  # infeasible: runs at once, misses
}
FIFO_KG = {"flex": 0.12, "rigid": 0.015, "spread": 0.18, "capped": 0.2, "late": 0.1}


def test_carbon_aware_perfect_matches_the_hand_answer(inputs):
    cluster, jobs, profiles = inputs
    result = simulate(cluster, jobs, "carbon-aware", "perfect", 0, profiles)
    assert check_result(result, cluster, jobs, profiles) == []
    got = {e["job_id"]: e for e in result["jobs"]}
    for job_id, (segments, kg) in CARBON_AWARE.items():
        assert [(round(s["start_s"], 6), round(s["end_s"], 6), s["zone"], s["cap_fraction"])
                for s in got[job_id]["segments"]] == segments, job_id
        assert got[job_id]["emissions_kg"] == pytest.approx(kg), job_id
    assert got["late"]["infeasible"] is True
    assert result["summary"]["deadline_misses"] == 1 and result["summary"]["infeasible"] == 1


def test_fifo_matches_the_hand_answer(inputs):
    cluster, jobs, profiles = inputs
    result = simulate(cluster, jobs, "fifo", "perfect", 0, profiles)
    assert check_result(result, cluster, jobs, profiles) == []
    assert {e["job_id"]: e["emissions_kg"] for e in result["jobs"]} == pytest.approx(FIFO_KG)


def test_brute_force_agrees_on_the_contiguous_jobs(inputs):
    """Every start on a one-minute grid, every allowed zone and cap: none beats the plan."""
    cluster, jobs, profiles = inputs
    zones = {z.name: z for z in cluster.zones}

    def kg(zone, start, run_s, watts):
        t = np.arange(start, start + run_s, 1.0)
        z = zones[zone]
        return watts * z.g_per_kwh[np.searchsorted(z.times_s, t, "right") - 1].sum() / 3.6e6 / 1000

    for job in jobs:
        if job.interruptible or not job.feasible:
            continue
        steps = profiles[job.profile].steps if job.profile else [None]
        best = min(kg(z, s, job.duration_s / (st.speed if st else 1.0),
                      job.gpus * job.power_w * (st.power_fraction if st else 1.0))
                   for z in (job.zones or zones) for st in steps
                   for s in np.arange(job.submit_s, job.effective_deadline_s - job.duration_s / (st.speed if st else 1)
                                      + 1, 60.0))
        assert CARBON_AWARE[job.job_id][1] == pytest.approx(best, rel=1e-9), job.job_id


def test_cli_end_to_end_writes_a_result_the_checker_accepts(tmp_path, capsys):
    out = tmp_path / "RESULT.json"
    code = simulate_main(["--cluster", str(DATA / "cluster.toml"), "--jobs", str(DATA / "jobs.csv"),
                          "--policy", "carbon-aware", "--forecast", "noisy:0.1", "--seed", "3",
                          "--power-profiles", str(DATA / "profiles.csv"), "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert (result["policy"], result["forecast"], result["seed"]) == ("carbon-aware", "noisy:0.1", 3)
    assert set(result["summary"]) >= {"jobs", "completed", "deadline_misses", "energy_kwh", "emissions_kg",
                                      "mean_wait_s", "wall_s"}
    assert json.loads(capsys.readouterr().out)["jobs"] == 5
    checked = subprocess.run([sys.executable, "-m", "scheduler.simulation.checker", "--cluster",
                              str(DATA / "cluster.toml"), "--jobs", str(DATA / "jobs.csv"), "--power-profiles",
                              str(DATA / "profiles.csv"), str(out)], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.strip().endswith("ok")


def test_cli_as_a_module_refuses_bad_input_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "scheduler.simulation", "--cluster", str(DATA / "cluster.toml"),
                           "--jobs", str(DATA / "jobs.csv"), "--power-profiles", str(DATA / "profiles.csv"),
                           "--policy", "greedy"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 1
    assert "unknown policy 'greedy'" in done.stderr and "fifo, carbon-aware" in done.stderr


def test_wattsched_simulate_is_the_same_command(tmp_path, capsys):
    from scheduler.cli.commands import main as wattsched

    out = tmp_path / "result.json"
    code = wattsched(["simulate", "--cluster", str(DATA / "cluster.toml"), "--jobs", str(DATA / "jobs.csv"),
                      "--policy", "carbon-aware", "--forecast", "persistence", "--out", str(out),
                      "--power-profiles", str(DATA / "profiles.csv")])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["policy"] == "carbon-aware" and result["forecast"] == "persistence"
    # the trace's one infeasible job ('late') is the only miss, and is reported as infeasible
    assert result["summary"]["deadline_misses"] == result["summary"]["infeasible"] == 1
    assert [j["job_id"] for j in result["jobs"] if j.get("infeasible")] == ["late"]
    assert wattsched(["simulate", "--cluster", str(DATA / "cluster.toml"), "--jobs", str(tmp_path / "none.csv"),
                      "--policy", "fifo"]) == 1
    assert "none.csv" in capsys.readouterr().err


def test_short_jobs_late_in_a_long_trace_are_planned_whatever_the_rounding():
    """Running integrals a year long (and padded 1e9 s back) round by far more than a 60 s job's cost; the planner
    must still search each job's own cheapest zone, not prune it on rounding (it once left such jobs planless)."""
    from scheduler.simulation.inputs import Cluster, Job, Zone

    hours = np.arange(0.0, 400 * 24 * 3600.0, 3600.0)
    flat = np.full(len(hours), 145.37)  # flat: each job's lower bound equals its cost of starting now
    cluster = Cluster(0.0, (Zone("DE", 1000, hours, flat),))
    jobs = [Job(f"j{i}-{k}", 3.0e7 + 1000.7 * i, 60.0, 8, 300.0, 3.0e7 + 1000.7 * i + 60.0 + 86400.0, False,
                ("DE",), "", "train", 2) for i in range(200) for k in range(3)]  # 3 at once: a batch
    result = simulate(cluster, jobs, "carbon-aware", "perfect")
    assert result["summary"]["completed"] == len(jobs)
    assert check_result(result, cluster, jobs, {}) == []


def test_a_due_job_preempts_an_interruptible_one_and_both_meet_their_deadlines():
    from scheduler.simulation.inputs import Cluster, Job, Zone

    hours = np.arange(0.0, 48 * 3600.0, 3600.0)
    cluster = Cluster(0.0, (Zone("DE", 1, hours, np.full(len(hours), 300.0)),))  # one GPU, a flat signal
    long = Job("long", 0.0, 4 * 3600.0, 1, 300.0, 40 * 3600.0, True, ("DE",), "", "train", 2)
    due = Job("due", 3600.0, 3600.0, 1, 300.0, 2 * 3600.0, False, ("DE",), "", "train", 3)  # no slack at all
    result = simulate(cluster, [long, due], "carbon-aware", "perfect")
    assert check_result(result, cluster, [long, due], {}) == []
    by_id = {e["job_id"]: e for e in result["jobs"]}
    assert by_id["due"]["completed_s"] == pytest.approx(2 * 3600.0)  # started on arrival: "long" made room
    assert [(s["start_s"], s["end_s"]) for s in by_id["long"]["segments"]] == [(0.0, 3600.0), (7200.0, 5 * 3600.0)]
    fifo = simulate(cluster, [long, due], "fifo", "perfect")
    assert {e["job_id"]: e["completed_s"] for e in fifo["jobs"]}["due"] == pytest.approx(5 * 3600.0)  # late


def test_the_simulator_refuses_to_suspend_a_job_that_is_not_running():
    from policies.decisions import Suspend
    from scheduler.simulation.engine import Simulation
    from scheduler.errors import PolicyViolation
    from scheduler.simulation.forecasts import make_forecast
    from scheduler.simulation.inputs import Cluster, Job, Zone

    class Rogue:
        name = "rogue"

        def decide(self, snapshot):
            return [Suspend(j.job_id, "because") for j in snapshot.waiting]

    cluster = Cluster(0.0, (Zone("DE", 1, np.array([0.0]), np.array([300.0])),))
    jobs = [Job("j", 0.0, 60.0, 1, 300.0, None, True, ("DE",), "", "train", 2)]
    with pytest.raises(PolicyViolation, match="rogue suspended j, which is not a running interruptible job"):
        Simulation(cluster, jobs, {}, Rogue(), make_forecast("perfect", cluster)).run()


def test_a_job_waiting_for_room_in_one_zone_is_offered_again_only_when_room_frees_there():
    """Room freed in B cannot start a job that waits for room in A: the simulator offers it again at A's stop."""
    from scheduler.simulation.engine import Simulation
    from scheduler.simulation.forecasts import make_forecast
    from scheduler.simulation.inputs import Cluster, Job, Zone

    class RecordingFifo:
        """fifo, noting at which instants the waiting job was offered."""

        name = "recording-fifo"

        def __init__(self):
            self.inner = create_policy("fifo")
            self.offers: list[float] = []

        def decide(self, snapshot):
            if any(j.job_id == "waits-for-A" for j in snapshot.waiting):
                self.offers.append(snapshot.now_s)
            return self.inner.decide(snapshot)

    flat = (np.array([0.0]), np.array([300.0]))
    cluster = Cluster(0.0, (Zone("A", 1, *flat), Zone("B", 1, *flat)))
    jobs = [Job("in-A", 0.0, 100.0, 1, 300.0, None, False, ("A",), "", "train", 2),
            Job("in-B", 0.0, 30.0, 1, 300.0, None, False, ("B",), "", "train", 3),
            Job("waits-for-A", 10.0, 50.0, 1, 300.0, None, False, ("A",), "", "train", 4)]
    policy = RecordingFifo()
    runs = Simulation(cluster, jobs, {}, policy, make_forecast("perfect", cluster)).run()
    assert policy.offers == [10.0, 100.0]  # not at 30, when B freed
    assert runs[2].segments[0].start_s == 100.0
